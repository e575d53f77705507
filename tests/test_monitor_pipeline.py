"""The ZenML monitor pipeline: drift of a token store's windows + the simulated A/B test, HTML reports as
artifacts and files, and the expected snapshots in the Evidently workspace."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from zenml.client import Client

from iat.data.io import write_dataset
from iat.data.synthetic import generate
from iat.tokens import write_store
from monitoring.workspace import AB_PROJECT, DRIFT_PROJECT, open_workspace
from monitoring.run import control_days
from pipelines.monitor import monitor_pipeline

REF_DAYS, CUR_DAYS, AB_DAYS = [7, 14], [20, 23], 3  # days 14..19: room for whole-week daily points


def _store_and_dataset(root: Path) -> tuple[Path, Path]:
    """A dense token store whose tokens are a fixed projection of each row's numeric features (no model needed
    for the plumbing), and the same instances as a dataset with a ``prediction`` column."""
    df, schema = generate(150, seed=4, days=24, progress=False)
    x = df[schema.numeric].to_numpy(np.float64)
    x = (np.sign(x) * np.log1p(np.abs(x)) - 1.0) / 2.0
    tokens = np.tanh(x @ np.random.default_rng(0).normal(size=(x.shape[1], 8)) / 3).astype(np.float32)
    store = write_store(
        root / "store",
        user_id=df["user_id"], ts=df["ts"], instance_id=df["instance_id"], domain=df["domain"], item_id=df["item_id"],
        category=df["category"], click=df["click"], conversion=df["conversion"], conversion_ts=df["conversion_ts"],
        tokens=tokens, kind="dense", dtype="fp16", source={"model": "projection", "version": "1", "run_id": "test", "config_hash": "0"},
    )
    data = write_dataset(root / "data", df.assign(prediction=1 / (1 + np.exp(-tokens[:, 0]))), schema)
    return store, data


def test_monitor_pipeline_fills_the_workspace(iat_home: Path) -> None:
    root = iat_home / "monitor-pipeline"  # inside the data root: steps refuse paths outside it
    store, data = _store_and_dataset(root)
    ws_path, reports = root / "evidently", root / "reports"
    ab = {
        "users": 150,
        "seed": 1,
        "control": "random",
        "treatment": "column:item_prior_ctr",
        "config": {"start_day": 14, "days": AB_DAYS, "requests_per_day": 150, "candidates": 6, "slots": 2, "n_boot": 100},
    }
    run = monitor_pipeline(
        store_path=str(store), reference_days=REF_DAYS, current_days=CUR_DAYS, dataset_path=str(data), ab=ab,
        workspace=str(ws_path), reports_dir=str(reports),
    )
    run = Client().get_pipeline_run(run.id)
    assert run.status.value == "completed"

    drift = run.steps["token_drift"].outputs
    verdict = drift["drift_verdict"][0].load()
    assert verdict["action"] in ("none", "rematerialize", "retrain_source")
    assert verdict["embedding_score"] is not None and verdict["prediction_drift"] is not None
    assert "<html" in drift["token_drift_report"][0].load().lower()
    assert "<html" in run.steps["ab_test"].outputs["ab_test_report"][0].load().lower()
    summary = run.steps["ab_test"].outputs["ab_summary"][0].load()
    assert set(summary["uplift"]) == {"ctr", "cvr", "revenue"} and summary["snapshots_added"] == 2 * AB_DAYS
    for name in ("tokens_drift.html", "features_drift.html", "ab_test.html"):
        assert (reports / name).stat().st_size > 10_000

    ws = open_workspace(ws_path)
    projects = {p.name: p for p in ws.list_projects()}
    drift_name = f"{DRIFT_PROJECT}: {store.name} (projection 1)"  # one project (one timeline) per store
    assert set(projects) == {drift_name, AB_PROJECT}
    drift_snaps = [ws.get_run(projects[drift_name].id, s) for s in ws.list_runs(projects[drift_name].id)]
    ab_snaps = [ws.get_run(projects[AB_PROJECT].id, s) for s in ws.list_runs(projects[AB_PROJECT].id)]
    n_days = CUR_DAYS[1] - CUR_DAYS[0]
    # one token and one feature snapshot per current day (each: the week up to it), and a control token snapshot on
    # the days whose week, moved as far before the reference, is still in the log (here the first: days 0..6);
    # a daily and a cumulative one per A/B day
    with_control = [d for d in range(*CUR_DAYS) if control_days(tuple(REF_DAYS), (d - 6, d + 1)) is not None]
    assert with_control == [CUR_DAYS[0]]
    assert sorted((tuple(sorted(s.tags)), s.timestamp.day) for s in drift_snaps) == sorted(
        [(tags, 1 + d) for d in range(*CUR_DAYS) for tags in (("current", "day", "tokens"), ("current", "day", "features"))]
        + [(("control", "day", "tokens"), 1 + d) for d in with_control]
    )
    assert len(ab_snaps) == 2 * AB_DAYS
    assert sorted(s.metadata["day"] for s in ab_snaps) == sorted(str(d) for d in range(14, 14 + AB_DAYS) for _ in range(2))
    assert len(drift_snaps) == 2 * n_days + len(with_control)
    # the dashboards are there and hold the panels the README shows
    titles = {p.title for p in ws.get_dashboard(projects[AB_PROJECT].id).panels}
    assert {"Daily CTR (clicks / impressions) per arm", "Uplift of CTR so far, with 95% CI"} <= titles
    heading = next(p for p in ws.get_dashboard(projects[AB_PROJECT].id).panels if p.title == "Online A/B test")
    assert "control = random, treatment = column:item_prior_ctr" in heading.subtitle  # the arms that ran
    dims = next(p for p in ws.get_dashboard(projects[drift_name].id).panels if p.title == "Share of drifted token dimensions")
    assert [v.legend for v in dims.values] == ["share of dims", "control (same lag)"]  # the day's point beside its control
    # a second run adds snapshots and leaves the dashboards as they were (no duplicated panels)
    before = len(ws.get_dashboard(projects[AB_PROJECT].id).panels)
    monitor_pipeline(ab=ab, workspace=str(ws_path), reports_dir=str(reports))
    assert len(ws.list_runs(projects[AB_PROJECT].id)) == 4 * AB_DAYS
    assert len(ws.get_dashboard(projects[AB_PROJECT].id).panels) == before
    json.dumps(verdict)  # the verdict is plain data a scheduler can read
