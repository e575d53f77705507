"""``iat``: generate data, validate logs, run the ZenML pipelines, inspect token stores."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from iatcli.env import quiet_tracebacks, setup_environment


def _cmd_generate(a: argparse.Namespace) -> int:
    from iat.data.io import dataset_parts, write_dataset, write_parts
    from iat.data.registry import load_dataset

    if a.chunked:
        if a.dataset != "synthetic":
            raise ValueError("--chunked streams the synthetic generator; other data sets are written whole")
        from iat.data.synthetic import generate_chunks, synthetic_schema

        out = write_parts(a.out, generate_chunks(a.users, seed=a.seed), synthetic_schema())
        parts = dataset_parts(out)
        print(f"wrote {sum(parts.values()):,} instances of {a.users:,} users in {len(parts)} parts -> {out}")
        return 0
    df, schema = load_dataset(a.dataset, users=a.users, seed=a.seed, path=a.path)
    out = write_dataset(a.out, df, schema)
    print(f"wrote {len(df):,} instances of {df['user_id'].nunique():,} users, {len(schema.features)} features -> {out}")
    return 0


def _cmd_validate(a: argparse.Namespace) -> int:
    from iat.data.files import load_log
    from iat.data.io import is_chunked
    from quality import QuarantineThresholdError, validate_log, write_validation_outputs

    out = Path(a.out) if a.out else (Path(a.path) if Path(a.path).is_dir() else Path(a.path).parent)
    if is_chunked(a.path):
        return _validate_chunked(a.path, out, a.max_quarantine_share)
    df, schema = load_log(a.path)
    try:
        result = validate_log(df, schema, max_quarantine_share=a.max_quarantine_share)
    except QuarantineThresholdError as e:
        paths = write_validation_outputs(e.result, out)
        print(f"error: {e}\nquarantined rows kept in {paths['quarantine']}", file=sys.stderr)
        return 2
    paths = write_validation_outputs(result, out)
    print(f"{result.n_input:,} rows: {len(result.clean):,} clean, {len(result.quarantine):,} quarantined")
    for name, n in sorted(result.counts.items()):
        print(f"  {n:>8,}  {name}")
    for k, p in paths.items():
        print(f"{k}: {p}")
    return 0


def _validate_chunked(path: str, out: Path, max_quarantine_share: float) -> int:
    from quality.parts import PartsThresholdError, validate_parts

    try:
        result = validate_parts(path, out, max_quarantine_share)
    except PartsThresholdError as e:
        print(f"error: {e}\nquarantined rows kept in {e.result.paths['quarantine']}", file=sys.stderr)
        return 2
    print(f"{result.n_input:,} rows in {len(result.parts)} parts: {result.n_clean:,} clean, {result.n_quarantine:,} quarantined")
    for name, n in sorted(result.counts.items()):
        print(f"  {n:>8,}  {name}")
    for k, p in result.paths.items():
        print(f"{k}: {p}")
    return 0


RUN_FLAGS = (
    "dataset", "users", "seed", "path", "model", "seeds", "epochs", "source", "source_version", "dtype", "post_sit", "shards", "online_store",
    "retention", "seq", "iat", "tokens", "L", "name", "processes",
)  # fmt: skip


def _refuse_flags(a: argparse.Namespace, flags: set[str], pipeline: str) -> None:
    given = sorted(f for f in flags if getattr(a, f, None) is not None)
    if given:
        raise ValueError(f"iat run {pipeline} does not take {', '.join('--' + f.replace('_', '-') for f in given)}")


def _cmd_run(a: argparse.Namespace) -> int:
    from iatcli.config import load_config
    from iatcli.runs import run_pipeline

    keys = RUN_FLAGS
    if a.pipeline == "end_to_end":
        from iatcli.end_to_end import CLI_FLAGS, cli_overrides, run_end_to_end

        _refuse_flags(a, set(keys) - set(CLI_FLAGS), "end_to_end")
        return run_end_to_end(a.config, cli_overrides(a))
    # a flag a pipeline does not take becomes an unknown key of its config section, which names it in the error
    cfg = load_config(a.config, a.pipeline, {k: getattr(a, k, None) for k in keys})
    return run_pipeline(a.pipeline, cfg)


def _cmd_tokens_inspect(a: argparse.Namespace) -> int:
    from iat.tokens import format_inspection, inspect_store

    print(format_inspection(inspect_store(a.path)))
    return 0


def _cmd_tokens_publish(a: argparse.Namespace) -> int:
    from iat.tokens.online import publish_to

    live = publish_to(a.path, a.redis, a.prefix, a.retention)
    kept = f", each user's last {a.retention}" if a.retention else ""
    print(f"published {a.path} to {a.redis} as live version {live['version']} under '{a.prefix}': {live['rows']:,} tokens{kept}")
    return 0


def _cmd_train_dist(a: argparse.Namespace) -> int:
    from iat.dist_train import main as dist_main

    return dist_main([a.job, *a.args])


def _cmd_demo(a: argparse.Namespace) -> int:
    from iatcli.demo import run_demo

    return run_demo(a.config)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="iat", description=__doc__)
    p.add_argument("--debug", action="store_true", help="on failure, show the traceback (also IAT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="write a data set (instances.parquet + schema.yaml) to a folder")
    g.add_argument("--dataset", choices=["synthetic", "movielens-100k"], default="synthetic")
    g.add_argument("--out", required=True, help="output folder")
    g.add_argument("--users", type=int, default=2_000, help="synthetic: number of users")
    g.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    g.add_argument("--path", help="movielens-100k: a GroupLens ml-100k folder (default: the recbole wheel's copy)")
    g.add_argument("--chunked", action="store_true", help="synthetic: stream chunks of 2,000 users into part-*.parquet (memory stays flat)")
    g.set_defaults(func=_cmd_generate)

    v = sub.add_parser("validate", help="validate a log; write clean / quarantine parquet and an HTML report")
    v.add_argument("path", help="a data set folder (chunked ones part by part), or a parquet/csv log with schema.yaml beside it")
    v.add_argument("--out", help="output folder (default: beside the input)")
    v.add_argument("--max-quarantine-share", type=float, default=0.05, help="fail above this share of bad rows")
    v.set_defaults(func=_cmd_validate)

    r = sub.add_parser("run", help="run a ZenML pipeline on the local stack")
    r.add_argument("pipeline", choices=["data", "source", "tokens", "downstream", "transfer", "end_to_end"])
    r.add_argument("--config", default="configs/demo.yaml", help="YAML run config (section named after the pipeline)")
    r.add_argument("--dataset", choices=["synthetic", "movielens-100k", "file"], help="the data set; tokens / downstream: whose source model (iat-source-<data set>-<kind>) to read")
    r.add_argument("--users", type=int)
    r.add_argument("--seed", type=int)
    r.add_argument("--path")
    r.add_argument("--model", choices=["temporal", "user_order", "hgaq", "logreg"], help="source: which source model to train; end_to_end: temporal | user_order")
    r.add_argument("--seeds", type=int, nargs="+", help="end_to_end: downstream training seeds (one base and one +IAT ranker each); transfer: the rankers' seeds")
    r.add_argument("--epochs", type=int, help="source: maximum training epochs (early stopping on valid AUC)")
    r.add_argument("--source", choices=["temporal", "user_order", "hgaq"], help="tokens / downstream: the source model whose version to use")
    r.add_argument("--source-version", help="tokens / downstream: that model's version (default: latest)")
    r.add_argument("--dtype", choices=["fp32", "fp16", "int8", "uint8"], help="tokens: storage dtype (default fp16, uint8 for hgaq)")
    r.add_argument("--post-sit", action="store_true", default=None, help="tokens: store post-SIT outputs (ablation)")
    r.add_argument("--shards", type=int, help="tokens: K > 1 materializes in K shard steps (by user) + a publish step")
    r.add_argument("--online-store", help="tokens: also publish the store to this Redis (redis://host:6379/0) as the live online store")
    r.add_argument("--retention", type=int, help="tokens: with --online-store, keep each user's last N tokens there")
    r.add_argument("--seq", choices=["din", "transformer", "longer", "none"], help="downstream: base behaviour-sequence module")
    r.add_argument("--iat", choices=["din", "transformer", "longer"], help="downstream: F_iat over the instance tokens")
    r.add_argument("--tokens", choices=["temporal", "user_order", "hgaq"], help="downstream: which source model's token store to read")
    r.add_argument("--L", type=int, help="downstream: instance-token history length")
    r.add_argument("--name", help="downstream: ranker name (ZenML model iat-ranker-<data set>-<name>)")
    r.add_argument("--processes", type=int, help="source / downstream: N > 1 trains with N DDP processes (torchrun, users sharded)")
    r.set_defaults(func=_cmd_run)

    t = sub.add_parser("tokens", help="token store tools")
    tsub = t.add_subparsers(dest="tokens_command", required=True)
    ti = tsub.add_parser("inspect", help="print a token store's manifest and per-user history lengths")
    ti.add_argument("path")
    ti.set_defaults(func=_cmd_tokens_inspect)
    tp = tsub.add_parser("publish", help="copy a token store to Redis as a new version and switch the live version to it (the online store)")
    tp.add_argument("path")
    tp.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis URL (default: %(default)s)")
    tp.add_argument("--prefix", default="iat", help="key prefix: one online store per prefix (default: %(default)s)")
    tp.add_argument("--retention", type=int, default=0, help="keep each user's last N tokens, also on every later ingest (0: all)")
    tp.set_defaults(func=_cmd_tokens_publish)

    d = sub.add_parser("demo", help="the main job: the end_to_end pipeline (data -> source -> tokens -> base and +IAT rankers -> transfer), with its result table")
    d.add_argument("--config", default="configs/demo.yaml")
    d.set_defaults(func=_cmd_demo)

    td = sub.add_parser("train-dist", help="train a source model or a ranker with N DDP processes (torchrun, users sharded)")
    td.add_argument("job", choices=["source", "downstream"], help="then its options: iat train-dist source --help")
    td.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    td.set_defaults(func=_cmd_train_dist)

    from iatcli import experiment_cmds, monitor_cmds, serve_cmds, transfer_cmds, zenml_cmds

    for module in (experiment_cmds, transfer_cmds, monitor_cmds, serve_cmds, zenml_cmds):
        module.register(sub)
    return p


USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError, PermissionError)


def main(argv: list[str] | None = None) -> int:
    """Exit 0 on success; on failure one line on stderr and exit 2 (bad input: the user's to fix) or 1 (anything
    else). ``--debug`` / ``IAT_DEBUG=1``: the traceback instead (ZenML's included)."""
    setup_environment()
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("IAT_DEBUG", "") not in ("", "0")
    if not debug:
        quiet_tracebacks()
    try:
        return int(args.func(args) or 0)
    except Exception as e:
        if debug:
            raise
        user = isinstance(e, USER_ERRORS)
        what = str(e) if user and str(e) else f"{type(e).__name__}: {e}"
        print(f"error: {what}" + ("" if user else "  (iat --debug ... shows the traceback)"), file=sys.stderr)
        return 2 if user else 1


if __name__ == "__main__":
    sys.exit(main())

