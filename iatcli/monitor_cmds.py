"""``iat monitor``: the Evidently UI over the project's workspace, token drift of a store, the simulated A/B test,
and the ZenML monitor pipeline. ``register(subparsers)`` adds them to the ``iat`` parser."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

EXIT_DRIFT = 3  # `monitor drift --fail-on-drift`: the verdict asks for an action


def _workspace(a: argparse.Namespace) -> Path:
    from monitoring.workspace import workspace_path

    return Path(a.workspace) if a.workspace else workspace_path()


def _cmd_ui(a: argparse.Namespace) -> int:
    ws = _workspace(a)
    ws.mkdir(parents=True, exist_ok=True)
    print(f"Evidently UI on http://127.0.0.1:{a.port} (workspace {ws}); Ctrl+C stops it", flush=True)
    cmd = [sys.executable, "-m", "evidently.cli", "ui", "--workspace", str(ws), "--host", "127.0.0.1", "--port", str(a.port)]
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0


def _section(path: str | None, name: str) -> dict[str, Any]:
    from iatcli.config import load_config

    return load_config(path, name, {}) if path else {}


def _cmd_drift(a: argparse.Namespace) -> int:
    from iat.drift import DriftConfig
    from monitoring.run import run_drift

    cfg = DriftConfig.from_dict(_section(a.config, "drift"))
    report, paths, added = run_drift(
        a.store, a.reference_days, a.current_days, a.dataset, cfg, None if a.no_workspace else _workspace(a), a.reports_dir
    )
    v = report.verdict
    print(f"drift verdict: {'DRIFTED' if v.drifted else 'stable'}; action: {v.action}")
    for r in v.reasons:
        print(f"  - {r}")
    shown = {k: v.to_dict()[k] for k in ("dim_drift_share", "embedding_score", "code_level_share", "feature_drift_share", "prediction_drift", "moved_columns")}
    print(json.dumps(shown, default=str))
    days = report.control_days
    print(f"control pair: days {days[0]}..{days[1] - 1} against the reference" if days else "control pair: none in the store (absolute thresholds)")
    for k, p in paths.items():
        print(f"{k} report: {p}")
    print(f"snapshots added to the workspace: {added}")
    return EXIT_DRIFT if a.fail_on_drift and v.action != "none" else 0


def _cmd_abtest(a: argparse.Namespace) -> int:
    from iat.abtest import ABConfig
    from monitoring.run import run_ab

    cfg = ABConfig(**{**_section(a.config, "abtest"), **{k: v for k, v in (("start_day", a.start_day), ("days", a.days), ("requests_per_day", a.requests_per_day), ("seed", a.seed)) if v is not None}})
    result, html, added = run_ab(a.users, a.seed or 0, cfg, a.control, a.treatment, None if a.no_workspace else _workspace(a), a.reports_dir)
    print(f"A/B test: control={a.control} treatment={a.treatment}, {cfg.days} days from day {cfg.start_day}")
    print(f"users per arm: {int(result.srm['users_control'])} / {int(result.srm['users_treatment'])}; SRM p-value {result.srm['p_value']:.3f}")
    print("| metric | control | treatment | uplift | 95% CI |")
    print("|---|---:|---:|---:|---|")
    for m, u in result.summary.items():
        print(f"| {m} | {u.control:.4f} | {u.treatment:.4f} | {u.uplift:+.2%} | [{u.lo:+.2%}, {u.hi:+.2%}]{' *' if u.significant else ''} |")
    print(f"report: {html}; snapshots added to the workspace: {added}")
    return 0


def _cmd_pipeline(a: argparse.Namespace) -> int:
    from zenml.client import Client

    from pipelines.monitor import monitor_pipeline

    cfg = _section(a.config, "monitor")
    cfg.setdefault("workspace", str(_workspace(a)))
    run = Client().get_pipeline_run(monitor_pipeline(**cfg).id)
    print(f"pipeline 'monitor' run {run.name}: {run.status.value}")
    for name, s in run.steps.items():
        print(f"  step {name:<12} {s.status.value}")
    return 0 if run.status.value == "completed" else 1


def _cmd_demo(a: argparse.Namespace) -> int:
    from monitoring.demo import build_demo

    build_demo(_workspace(a), a.work_dir, a.reports_dir, users=a.users, seed=a.seed, shift_kind=a.shift, ab_users=a.ab_users, control=a.control, treatment=a.treatment)
    print(f"open the dashboards: iat monitor ui{' --workspace ' + a.workspace if a.workspace else ''}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``monitor ui | drift | abtest | demo | pipeline`` to the ``iat`` command."""
    m = subparsers.add_parser("monitor", help="Evidently monitoring: drift, online A/B test, dashboards")
    sub = m.add_subparsers(dest="monitor_command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--workspace", help="Evidently workspace folder (default: <project>/data/evidently)")

    u = sub.add_parser("ui", help="start the Evidently UI on 127.0.0.1 over the workspace")
    common(u)
    u.add_argument("--port", type=int, default=8000)
    u.set_defaults(func=_cmd_ui)

    d = sub.add_parser("drift", help="token (+ feature / prediction) drift of a token store: current vs reference window")
    common(d)
    d.add_argument("--store", required=True, help="token store folder")
    d.add_argument("--reference-days", type=int, nargs=2, required=True, metavar=("START", "END"), help="days [START, END) from the first token's day")
    d.add_argument("--current-days", type=int, nargs=2, required=True, metavar=("START", "END"))
    d.add_argument("--dataset", help="dataset folder of the same instances (raw-feature drift; prediction drift if it has a 'prediction' column)")
    d.add_argument("--config", help="YAML with a 'drift' section (iat.drift.DriftConfig thresholds)")
    d.add_argument("--reports-dir", default="reports/monitoring")
    d.add_argument("--no-workspace", action="store_true", help="write the HTML reports only")
    d.add_argument("--fail-on-drift", action="store_true", help=f"exit with {EXIT_DRIFT} when the verdict's action is not 'none'")
    d.set_defaults(func=_cmd_drift)

    b = sub.add_parser("abtest", help="simulate an online A/B test on the synthetic world")
    common(b)
    b.add_argument("--users", type=int, default=2_000)
    b.add_argument("--seed", type=int)
    b.add_argument("--control", default="ranker:base", help="scorer spec: ranker:base | ranker:iat[:user_order|temporal] | logreg | temporal | random | column:<name>")
    b.add_argument("--treatment", default="ranker:iat", help="scorer spec (as --control)")
    b.add_argument("--start-day", type=int)
    b.add_argument("--days", type=int)
    b.add_argument("--requests-per-day", type=int)
    b.add_argument("--config", help="YAML with an 'abtest' section (iat.abtest.ABConfig fields)")
    b.add_argument("--reports-dir", default="reports/monitoring")
    b.add_argument("--no-workspace", action="store_true")
    b.set_defaults(func=_cmd_abtest)

    e = sub.add_parser("demo", help="drift you can see happen: a synthetic world that shifts, its tokens, drift + A/B into the workspace")
    common(e)
    e.add_argument("--work-dir", default="data/monitor-demo", help="where the demo token store and dataset go")
    e.add_argument("--reports-dir", default="reports/monitoring")
    e.add_argument("--users", type=int, default=600)
    e.add_argument("--ab-users", type=int, default=2_000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--shift", choices=["catalogue", "context", "interest"], default="catalogue")
    e.add_argument("--control", default="ranker:base", help="A/B control arm (scorer spec, as for iat monitor abtest)")
    e.add_argument("--treatment", default="ranker:iat", help="A/B treatment arm")
    e.set_defaults(func=_cmd_demo)

    p = sub.add_parser("pipeline", help="run the ZenML monitor pipeline (drift + A/B) with a config's 'monitor' section")
    common(p)
    p.add_argument("--config", default="configs/monitor.yaml")
    p.set_defaults(func=_cmd_pipeline)
