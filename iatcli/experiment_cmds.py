"""``iat experiment``: the downstream result tables (prepare -> matrix workers -> report)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml


def _section(config: str, name: str) -> dict[str, Any]:
    doc = yaml.safe_load(Path(config).read_text()) or {}
    if name not in doc:
        raise ValueError(f"{config} has no experiment '{name}'; it has {sorted(doc)}")
    return doc[name]


def _run(a: argparse.Namespace) -> int:
    from iat import experiment_run as er

    cfg = _section(a.config, a.name)
    if a.tables:  # a subset of the config's tables, e.g. to add tables to a finished run without re-running the rest
        cfg["matrix"] = {**cfg["matrix"], "tables": [t.strip() for t in a.tables.split(",") if t.strip()]}
    work = Path(a.workdir or f"runs/experiments/{a.name}")
    if a.stage in ("prepare", "all"):
        er.prepare(
            work, cfg["dataset"], cfg["source_train"], cfg["matrix"],
            source_train_by_model=cfg.get("source_train_by_model"), source_models=cfg.get("source_models"),
        )  # fmt: skip
        print(f"prepared sources and token stores in {work}")
    if a.stage == "matrix":
        er.run_worker(work, cfg["matrix"], cfg["train"], a.worker, a.workers)
    if a.stage == "all":
        # One process per core, one torch thread each: n single-threaded trainings beat one n-threaded one here.
        base = [sys.executable, "-m", "iatcli.main", "experiment", "matrix", "--config", a.config, "--name", a.name, "--workdir", str(work)]
        base += ["--tables", a.tables] if a.tables else []
        procs = [subprocess.Popen(base + ["--worker", str(i), "--workers", str(a.workers)]) for i in range(a.workers)]
        codes = [p.wait() for p in procs]
        if any(codes):
            print(f"error: matrix workers exited with {codes}; re-run to resume", file=sys.stderr)
            return 1
    if a.stage in ("report", "all"):
        print(er.report(work, cfg["matrix"], f"{a.name} (command: iat experiment all --name {a.name})"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("experiment", help="train the downstream matrix over seeds and write the result tables")
    e.add_argument("stage", choices=["prepare", "matrix", "report", "all"])
    e.add_argument("--config", default="configs/experiments.yaml")
    e.add_argument("--name", default="synthetic", help="experiment section of the config (synthetic, movielens)")
    e.add_argument("--workdir", help="default: runs/experiments/<name>")
    e.add_argument("--tables", help="comma-separated subset of the config's tables (main, f_iat, ablations, sif)")
    e.add_argument("--worker", type=int, default=0)
    e.add_argument("--workers", type=int, default=2)
    e.set_defaults(func=_run)
