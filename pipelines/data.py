from typing import Optional

from zenml import pipeline

from steps.ingest import ingest
from steps.split import split
from steps.validate import validate


@pipeline(enable_cache=True)
def data_pipeline(
    dataset: str = "synthetic",
    users: int = 2_000,
    seed: int = 0,
    path: Optional[str] = None,
    max_quarantine_share: float = 0.05,
    reports_dir: str = "reports/validation",
) -> None:
    """ingest -> validate (Great Expectations) -> time split."""
    raw, schema = ingest(dataset=dataset, users=users, seed=seed, path=path)
    clean, _, _ = validate(raw, schema, max_quarantine_share=max_quarantine_share, reports_dir=reports_dir)
    split(clean)
