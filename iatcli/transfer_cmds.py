"""``iat transfer``: the in-domain and cross-domain transfer tables over seeds (configs/transfer.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path


def _run(a: argparse.Namespace) -> int:
    from iat.experiment_run import prepare_data
    from iat.transfer import run_transfer
    from iatcli.experiment_cmds import _section

    cfg = _section(a.config, a.name)
    unknown = sorted(set(cfg) - {"dataset", "transfer"})
    if unknown:
        raise ValueError(f"{a.config} section '{a.name}': unknown keys {unknown}; expected dataset, transfer")
    transfer = dict(cfg.get("transfer") or {})
    if a.seeds:
        transfer["seeds"] = [int(s) for s in a.seeds.split(",") if s.strip()]
    work = Path(a.workdir or f"runs/transfer/{a.name}")
    df, schema = prepare_data(work, cfg["dataset"])
    title = f"{a.name} (command: iat transfer --name {a.name})"
    result = run_transfer(df, schema, transfer, work, title=title)
    print(result.markdown)
    print(f"per-seed results: {work / 'results.csv'}; table: {work / 'table.md'}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    t = sub.add_parser("transfer", help="in-domain and cross-domain transfer of instance tokens: a table over seeds")
    t.add_argument("--config", default="configs/transfer.yaml")
    t.add_argument("--name", default="synthetic", help="section of the config (synthetic, movielens)")
    t.add_argument("--workdir", help="default: runs/transfer/<name>; a re-run resumes there")
    t.add_argument("--seeds", help="comma-separated downstream seeds (default: the config's)")
    t.set_defaults(func=_run)
