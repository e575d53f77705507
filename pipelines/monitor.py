from typing import Any, Dict, List, Optional

from zenml import pipeline
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception

from steps.monitor import ab_test, token_drift


@pipeline(enable_cache=False, execution_mode=ExecutionMode.FAIL_FAST)
def monitor_pipeline(
    store_path: Optional[str] = None,
    reference_days: Optional[List[int]] = None,
    current_days: Optional[List[int]] = None,
    dataset_path: Optional[str] = None,
    drift: Optional[Dict[str, Any]] = None,
    ab: Optional[Dict[str, Any]] = None,
    workspace: Optional[str] = None,
    reports_dir: str = "reports/monitoring",
) -> None:
    """Token / feature / prediction drift of a token store (when ``store_path`` is given) and the simulated A/B
    test (when ``ab`` is given: users, seed, control, treatment and ``config`` for ``iat.abtest.ABConfig``).
    Both add their snapshots to the Evidently workspace. Not cached: each run is a new observation."""
    if store_path is not None:
        if reference_days is None or current_days is None:
            raise ValueError("drift monitoring needs reference_days and current_days, e.g. [23, 30] and [30, 37]")
        token_drift(store_path, reference_days, current_days, dataset_path, drift, workspace, reports_dir)
    if ab is not None:
        known = {"users", "seed", "control", "treatment", "config"}
        unknown = sorted(set(ab) - known)
        if unknown:
            raise ValueError(f"monitor pipeline: unknown keys in ab {unknown}; known: {sorted(known)}")
        ab_test(
            users=ab.get("users", 2_000),
            seed=ab.get("seed", 0),
            ab_config=ab.get("config"),
            control=ab.get("control", "ranker:base"),
            treatment=ab.get("treatment", "ranker:iat"),
            workspace=workspace,
            reports_dir=reports_dir,
        )
