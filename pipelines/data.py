from typing import Any, Optional

from zenml import pipeline
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception

from steps.ingest import ingest
from steps.split import split
from steps.validate import validate


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def data_pipeline(
    dataset: str = "synthetic",
    users: int = 2_000,
    seed: int = 0,
    path: Optional[str] = None,
    max_quarantine_share: float = 0.05,
    reports_dir: str = "reports/validation",
) -> None:
    """ingest -> validate (Great Expectations) -> time split."""
    data_steps(dataset, users, seed, path, max_quarantine_share, reports_dir)


def data_steps(
    dataset: str, users: int, seed: int, path: Optional[str], max_quarantine_share: float, reports_dir: str
) -> tuple[Any, Any]:
    """The data stages, shared by every pipeline that starts from a raw log; returns (split log, schema)."""
    raw, schema = ingest(dataset=dataset, users=users, seed=seed, path=path)
    clean, _, _ = validate(raw, schema, max_quarantine_share=max_quarantine_share, reports_dir=reports_dir)
    return split(clean), schema
