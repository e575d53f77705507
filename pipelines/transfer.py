from typing import Any, Dict, Optional

from zenml import pipeline
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception

from pipelines.data import data_steps
from steps.transfer import transfer_evaluation


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def transfer_pipeline(
    dataset: str = "synthetic",
    users: int = 2_000,
    seed: int = 0,
    path: Optional[str] = None,
    max_quarantine_share: float = 0.05,
    reports_dir: str = "reports/validation",
    config: Optional[Dict[str, Any]] = None,
    work_dir: Optional[str] = None,
) -> None:
    """ingest -> validate -> time split -> transfer_evaluation (sources per domain, their token stores, and the
    base / cross-domain / in-domain rankers over seeds; ``config`` is an ``iat.transfer.TransferConfig`` dict)."""
    split_df, schema = data_steps(dataset, users, seed, path, max_quarantine_share, reports_dir)
    transfer_evaluation(split_df, schema, config=config, work_dir=work_dir)
