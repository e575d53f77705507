from pathlib import Path
from typing import Annotated, Any, Dict, List, Optional, Tuple

from zenml import log_metadata, step
from zenml.types import HTMLString

from iat.abtest import ABConfig
from iat.drift import DriftConfig
from iat.limits import confined
from monitoring.run import run_ab, run_drift


@step
def token_drift(
    store_path: str,
    reference_days: List[int],
    current_days: List[int],
    dataset_path: Optional[str] = None,
    drift_config: Optional[Dict[str, Any]] = None,
    workspace: Optional[str] = None,
    reports_dir: str = "reports/monitoring",
) -> Tuple[
    Annotated[HTMLString, "token_drift_report"],
    Annotated[HTMLString, "feature_drift_report"],
    Annotated[Dict[str, Any], "drift_verdict"],
]:
    """Evidently drift of a token store's current window against its reference window (+ raw features and
    predictions when the dataset is given); one snapshot per current day in the workspace. The verdict's
    ``action`` (none | rematerialize | retrain_source) is what a downstream step or scheduler acts on."""
    report, paths, added = run_drift(
        confined(store_path, "store_path"), reference_days, current_days, None if dataset_path is None else confined(dataset_path, "dataset_path"),
        DriftConfig.from_dict(drift_config), None if workspace is None else confined(workspace, "workspace"), confined(reports_dir, "reports_dir"),
    )  # fmt: skip
    v = report.verdict.to_dict()
    log_metadata({"verdict": v, "snapshots_added": added, "reports": {k: str(p) for k, p in paths.items()}}, infer_artifact=True, artifact_name="drift_verdict")
    features = paths.get("features")
    empty = "<p>No dataset given: raw-feature and prediction drift were not measured.</p>"
    return HTMLString(paths["tokens"].read_text()), HTMLString(Path(features).read_text() if features else empty), v


@step
def ab_test(
    users: int = 2_000,
    seed: int = 0,
    ab_config: Optional[Dict[str, Any]] = None,
    control: str = "ranker:base",
    treatment: str = "ranker:iat",
    workspace: Optional[str] = None,
    reports_dir: str = "reports/monitoring",
) -> Tuple[Annotated[HTMLString, "ab_test_report"], Annotated[Dict[str, Any], "ab_summary"]]:
    """Simulated online A/B test on the synthetic world: daily CTR / CVR / revenue per arm, uplift with
    per-user bootstrap CIs, sample-ratio test; two snapshots per day (daily, cumulative) in the workspace."""
    ws, reports = None if workspace is None else confined(workspace, "workspace"), confined(reports_dir, "reports_dir")
    result, html, added = run_ab(users, seed, ABConfig(**(ab_config or {})), control, treatment, ws, reports, progress=False)
    summary = {
        "control": control,
        "treatment": treatment,
        "uplift": {m: {"control": u.control, "treatment": u.treatment, "uplift": u.uplift, "lo": u.lo, "hi": u.hi, "significant": u.significant} for m, u in result.summary.items()},
        "srm": result.srm,
        "snapshots_added": added,
    }
    log_metadata(summary, infer_artifact=True, artifact_name="ab_summary")
    return HTMLString(html.read_text()), summary
