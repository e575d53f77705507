"""Train a source model or a downstream ranker with N processes (torch DDP): the worker that ``torchrun`` starts,
and the launcher behind the ZenML steps' ``processes`` parameter and ``iat train-dist``.

    torchrun --nproc_per_node 2 -m iat.dist_train source --data DIR --kind user_order --out BUNDLE
    python -m iat.dist_train source --data DIR --kind user_order --out BUNDLE --processes 2   # starts torchrun

``--data`` is a dataset folder, whole or chunked (``iat.data.io``; the time split is added when the log has none).
Every rank reads it and makes the same library call (``train_source`` / ``train_downstream``), which trains and
scores the rank's share of users (``iat.distributed``); rank 0 writes the bundle to ``--out``.
``train_source_with`` / ``train_downstream_with`` make that call in this process for ``processes=1`` and through
torchrun otherwise, and return the bundle.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pandas as pd

from iat import distributed as dist
from iat.data.io import read_dataset, write_dataset
from iat.data.split import add_split
from iat.downstream import DownstreamData, DownstreamSpec, RankerBundle, load_ranker, save_ranker, train_downstream
from iat.models.registry import SOURCE_KINDS, SourceBundle, load_bundle, save_bundle, train_source
from iat.schema import SPLIT_COLUMN, Schema
from iat.tokens import TokenStore
from iat.train import TASK_KEYS, TrainConfig

MODULE = "iat.dist_train"


def build_parser(p: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    p = p or argparse.ArgumentParser(prog=f"python -m {MODULE}", description="train with N DDP processes on this machine")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", required=True, help="dataset folder: instances.parquet or parts, + schema.yaml")
    common.add_argument("--out", required=True, help="bundle folder (written by rank 0)")
    common.add_argument("--train-config", type=json.loads, default="{}", help="TrainConfig fields as JSON; batch_size is the global batch")
    common.add_argument("--n-boot", type=int, default=200, help="user-bootstrap resamples for the valid / test CIs")
    common.add_argument("--processes", type=int, default=1, help="DDP processes (> 1: started through torchrun)")
    sub = p.add_subparsers(dest="job", required=True)
    s = sub.add_parser("source", parents=[common], help="train a source model")
    s.add_argument("--kind", required=True, choices=SOURCE_KINDS)
    s.add_argument("--model-config", type=json.loads, default="{}", help="model config as JSON")
    s.add_argument("--checkpoint-dir", help="resume from / checkpoint to this folder (same number of processes)")
    d = sub.add_parser("downstream", parents=[common], help="train a downstream ranker")
    d.add_argument("--spec", type=json.loads, required=True, help="DownstreamSpec fields as JSON")
    d.add_argument("--tokens", help="token store folder (a spec that reads tokens)")
    d.add_argument("--tokenizer", help="HGAQ source bundle folder (SIF-Mixer)")
    d.add_argument("--task", choices=sorted(TASK_KEYS), default="click")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    if a.processes < 1:
        raise ValueError(f"--processes must be >= 1, got {a.processes}")
    if a.processes > 1 and not dist.launched():
        dist.torchrun(a.processes, MODULE, argv)  # the workers land in the branch below
        return 0
    with dist.process_group():
        _work(a)
    return 0


def _work(a: argparse.Namespace) -> None:
    df, schema = read_dataset(a.data)
    if SPLIT_COLUMN not in df.columns:
        df = add_split(df)
    cfg = TrainConfig(**a.train_config)
    bundle: SourceBundle | RankerBundle
    if a.job == "source":
        bundle = train_source(df, schema, a.kind, a.model_config or None, cfg, a.checkpoint_dir, n_boot=a.n_boot)
    else:
        store = TokenStore.open(a.tokens) if a.tokens else None
        tokenizer = load_bundle(a.tokenizer).model if a.tokenizer else None
        data = DownstreamData.prepare(df, schema)
        bundle, _ = train_downstream(data, DownstreamSpec(**a.spec), store, cfg, tokenizer, n_boot=a.n_boot, task=a.task)
    if dist.is_main():
        (save_bundle if a.job == "source" else save_ranker)(bundle, a.out)  # type: ignore[operator]
        m = bundle.metrics
        print(
            f"{a.job}: valid auc {m['valid']['auc']:.4f}, test auc {m['test']['auc']:.4f}, "
            f"{m['samples_per_s']:,.0f} training samples/s with {m['processes']} processes -> {a.out}",
            flush=True,
        )


def _job_args(tmp: Path, df: pd.DataFrame, schema: Schema, cfg: TrainConfig, n_boot: int) -> list[str]:
    write_dataset(tmp / "data", df, schema)
    return ["--data", str(tmp / "data"), "--out", str(tmp / "bundle"), "--train-config", json.dumps(asdict(cfg)), "--n-boot", str(n_boot)]


def train_source_with(
    processes: int,
    df: pd.DataFrame,
    schema: Schema,
    kind: str,
    model_config: dict[str, Any] | None = None,
    cfg: TrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    n_boot: int = 200,
) -> SourceBundle:
    """``train_source`` with ``processes`` DDP processes on this machine (one: in this process)."""
    cfg = cfg or TrainConfig()
    if processes == 1:
        return train_source(df, schema, kind, model_config, cfg, checkpoint_dir, n_boot=n_boot)
    with tempfile.TemporaryDirectory(prefix="iat-dist-") as t:
        tmp = Path(t)
        args = ["source", *_job_args(tmp, df, schema, cfg, n_boot), "--kind", kind, "--model-config", json.dumps(model_config or {})]
        dist.torchrun(processes, MODULE, args + (["--checkpoint-dir", str(checkpoint_dir)] if checkpoint_dir else []))
        return load_bundle(tmp / "bundle")


def train_downstream_with(
    processes: int,
    data: DownstreamData,
    spec: DownstreamSpec,
    store: TokenStore | None,
    cfg: TrainConfig,
    tokenizer: SourceBundle | None = None,
    n_boot: int = 0,
    task: str = "click",
) -> tuple[RankerBundle, dict[str, Any]]:
    """``train_downstream`` with ``processes`` DDP processes on this machine (one: in this process)."""
    if processes == 1:
        return train_downstream(data, spec, store, cfg, tokenizer.model if tokenizer else None, n_boot=n_boot, task=task)
    with tempfile.TemporaryDirectory(prefix="iat-dist-") as t:
        tmp = Path(t)
        args = ["downstream", *_job_args(tmp, data.df, data.encoder.schema, cfg, n_boot), "--spec", json.dumps(asdict(spec)), "--task", task]
        if store is not None:
            args += ["--tokens", str(store.root)]
        if tokenizer is not None:
            args += ["--tokenizer", str(save_bundle(tokenizer, tmp / "tokenizer"))]
        dist.torchrun(processes, MODULE, args)
        bundle = load_ranker(tmp / "bundle")
        return bundle, bundle.metrics


if __name__ == "__main__":
    sys.exit(main())
