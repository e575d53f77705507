"""The experiment runner on disk, in three stages that share a work folder:

1. ``prepare``: load + split the data set, train the source models (temporal, user-order, HGAQ) once, and
   materialize their token stores (temporal, user-order pre-SIT and post-SIT, HGAQ codes);
2. ``matrix``: train the downstream matrix over seeds; ``worker i of n`` takes every n-th job, so n processes
   with one torch thread each use n cores without oversubscribing them; results append to a CSV per worker;
3. ``report``: merge the CSVs and write the tables (markdown) in the papers' form.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iat.data.io import append_csv_rows, read_dataset, write_dataset
from iat.data.registry import load_dataset
from iat.data.split import add_split
from iat.downstream import DownstreamData, DownstreamSpec, train_downstream
from iat.experiments import ARCHS, MatrixRun, base_of, format_table, matrix_specs, oracles, relative_table
from iat.models.registry import load_bundle, save_bundle, train_source
from iat.schema import Schema
from iat.tokens.materialize import materialize
from iat.tokens.store import TokenStore
from iat.train import TrainConfig

STORES = {"temporal": ("temporal", False), "user_order": ("user_order", False), "user_order_post": ("user_order", True), "hgaq": ("hgaq", False)}
SEGMENTS = ("returning", "new")  # test users with train rows / without
TABLE_TITLES = {
    "main": "Relative change vs the base model, per base sequence architecture (+T-IAT, +U-IAT; F_iat = Transformer)",
    "f_iat": "F_iat over the U-IAT tokens (base sequence module: DIN)",
    "ablations": "Ablations of +U-IAT (base DIN, F_iat Transformer)",
    "sif": "SIF: item-id-only sequence vs dense instance embedding vs HGAQ tokens; SIF-Mixer vs flat attention",
}


def prepare_data(work: Path, dataset: dict[str, Any]) -> tuple[pd.DataFrame, Schema]:
    """The data set (``dataset``, ``users``, ``seed``, ``path``) with its time split, written once to ``work/data``."""
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "data" / "instances.parquet").is_file():
        df, schema = load_dataset(dataset["dataset"], users=dataset.get("users", 2_000), seed=dataset.get("seed", 0), path=dataset.get("path"))
        write_dataset(work / "data", add_split(df), schema)
    return read_dataset(work / "data")


def needed_stores(tables: dict[str, list[DownstreamSpec]]) -> list[str]:
    """The token stores the tables' specs read (the SIF-Mixer reads the HGAQ store's codes)."""
    return [n for n in STORES if any(s.tokens == n for specs in tables.values() for s in specs)]


def prepare(
    work: Path,
    dataset: dict[str, Any],
    source_train: dict[str, Any],
    matrix: dict[str, Any] | None = None,
    threads: int = 1,
    source_train_by_model: dict[str, dict[str, Any]] | None = None,
    source_models: dict[str, dict[str, Any]] | None = None,
) -> None:
    """Data, then the source models and token stores the matrix's tables read (all with ``matrix`` None).
    ``source_train_by_model``: per source kind, train keys on top of ``source_train`` (e.g. tuned learning rates);
    ``source_models``: per source kind, model config keys on top of its defaults."""
    df, schema = prepare_data(work, dataset)
    stores = needed_stores(selected_tables(matrix)) if matrix is not None else list(STORES)
    for kind in dict.fromkeys(STORES[n][0] for n in stores):
        folder = work / "sources" / kind
        if not (folder / "config.json").is_file():  # resumable: finished stages are kept
            cfg = TrainConfig(**{**source_train, **(source_train_by_model or {}).get(kind, {}), "threads": threads, "progress": False})
            model = (source_models or {}).get(kind)
            save_bundle(train_source(df, schema, kind, model, cfg, work / "checkpoints" / kind, n_boot=0), folder)
    for name in stores:
        kind, post = STORES[name]
        if not (work / "stores" / name / "manifest.json").is_file():
            materialize(load_bundle(work / "sources" / kind), df, work / "stores" / name, post_sit=post, overwrite=True, progress=False)


def selected_tables(matrix: dict[str, Any]) -> dict[str, list[DownstreamSpec]]:
    """The matrix config's tables (all by default) at its L and token lengths."""
    tables = matrix_specs(matrix.get("L", 64), tuple(matrix.get("lengths", (16, 64, 256))), matrix.get("with_hgaq", True), matrix.get("ranker"), tuple(matrix.get("archs", ARCHS)))
    keep = matrix.get("tables") or list(tables)
    unknown = sorted(set(keep) - set(tables))
    if unknown:
        raise ValueError(f"matrix.tables: unknown tables {unknown}; known: {sorted(tables)}")
    return {k: tables[k] for k in keep}


def _jobs(tables: dict[str, list[DownstreamSpec]], seeds: list[int]) -> list[tuple[DownstreamSpec, int]]:
    specs: dict[str, DownstreamSpec] = {}
    for t in tables.values():
        for s in t:
            specs.setdefault(s.name, s)
    return [(s, seed) for seed in seeds for s in specs.values()]


def split_metrics(m: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(split, metrics) of a trained model: valid, test, and test:returning / test:new where the test split has both."""
    out = [("valid", m["valid"]), ("test", m["test"])]
    return out + [(f"test:{seg}", m["test"][seg]) for seg in SEGMENTS if seg in m["test"]]


def run_worker(work: Path, matrix: dict[str, Any], train: dict[str, Any], worker: int, workers: int) -> Path:
    """Run this worker's share of the matrix; skips jobs already in its CSV (a crashed worker resumes)."""
    df, schema = read_dataset(work / "data")
    data = DownstreamData.prepare(df, schema)
    tables = selected_tables(matrix)
    out = work / "results" / f"worker-{worker}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    done = set()  # jobs any worker finished: re-running with a changed matrix or worker count never repeats one
    for p in out.parent.glob("worker-*.csv"):
        prev = pd.read_csv(p)
        done |= set(zip(prev["spec"], prev["seed"]))
    stores = {n: TokenStore.open(work / "stores" / n) for n in needed_stores(tables)}
    tokenizer = load_bundle(work / "sources" / "hgaq").model if "hgaq" in stores else None
    for i, (spec, seed) in enumerate(_jobs(tables, list(matrix["seeds"]))):
        if i % workers != worker or (spec.name, seed) in done:
            continue
        cfg = TrainConfig(**{**train, "seed": seed, "threads": 1, "progress": False})
        _, m = train_downstream(data, spec, stores.get(spec.tokens) if spec.tokens else None, cfg, tokenizer)
        rows = [
            {"spec": spec.name, "base": base_of(spec), "seed": seed, "split": split, **{k: metrics[k] for k in ("auc", "gauc", "logloss", "n")},
             "params": m["params"], "samples_per_s": m["samples_per_s"], "best_epoch": m["best_epoch"]}
            for split, metrics in split_metrics(m)
        ]  # fmt: skip
        append_csv_rows(out, rows)
        print(f"[worker {worker}] {spec.name} seed {seed}: test auc {m['test']['auc']:.4f}", flush=True)
    return out


def report(work: Path, matrix: dict[str, Any], title: str) -> str:
    results = pd.concat([pd.read_csv(p) for p in sorted((work / "results").glob("worker-*.csv"))], ignore_index=True)
    results = results.drop_duplicates(["spec", "seed", "split"])
    df, _ = read_dataset(work / "data")
    oracle = oracles(df)
    run = MatrixRun(results, oracle)
    tables = selected_tables(matrix)
    parts = [f"### {title}", ""]
    if oracle:
        parts += [f"Oracle test AUC (the generator's true p_click): **{oracle['test']:.4f}**.", ""]
    for name, specs in tables.items():
        names = list(dict.fromkeys(s.name for s in specs))
        have = [n for n in names if n in set(results["spec"])]
        if have:
            parts += [format_table(relative_table(run, have), TABLE_TITLES[name]), ""]
    main = [s.name for s in tables.get("main", []) if s.name in set(results["spec"])]
    for seg in SEGMENTS:
        split = f"test:{seg}"
        have = [n for n in main if ((results["spec"] == n) & (results["split"] == split)).any()]
        if have:
            n_rows = int(results.loc[results["split"] == split, "n"].max())
            title = f"Main table on the test rows of {seg} users ({'with' if seg == 'returning' else 'without'} train rows; {n_rows:,} rows)"
            parts += [format_table(relative_table(run, have, split), title), ""]
    sources = {k: json.loads((work / "sources" / k / "metrics.json").read_text())["test"] for k in ("temporal", "user_order", "hgaq") if (work / "sources" / k / "metrics.json").is_file()}
    if sources:
        parts += ["**Source models (seed 0), test split**", "", "| source | AUC | GAUC | LogLoss |", "|---|---:|---:|---:|"]
        parts += [f"| {k} | {m['auc']:.4f} | {m['gauc']:.4f} | {m['logloss']:.4f} |" for k, m in sources.items()]
        parts.append("")
    storage = {n: TokenStore.open(work / "stores" / n) for n in STORES if (work / "stores" / n / "manifest.json").is_file()}
    if storage:
        parts += ["**Storage per history position** (token bytes; side info adds about 44 B)", "", "| tokens | dtype | dims | bytes |", "|---|---|---|---:|"]
        for n, s in storage.items():
            dims = s.dims
            per = int(np.prod(dims)) * {"fp32": 4, "fp16": 2, "int8": 1, "uint8": 1}[s.dtype]
            parts.append(f"| {n} | {s.dtype} | {'x'.join(map(str, dims))} | {per} |")
        parts += ["| item-id sequence (base) | int64 | 1 (+category, click) | 8 |", ""]
    text = "\n".join(parts)
    (work / "tables.md").write_text(text)
    return text
