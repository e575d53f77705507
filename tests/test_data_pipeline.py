"""The ZenML data pipeline on the real local stack, in the temporary ZenML store of conftest.py."""

import pandas as pd
from zenml.client import Client

from pipelines.data import data_pipeline


def test_data_pipeline_runs_and_accounts_for_every_row(iat_home):
    run = data_pipeline(dataset="synthetic", users=120, seed=2, reports_dir=str(iat_home / "reports" / "validation"))
    run = Client().get_pipeline_run(run.id)
    assert run.status.value == "completed"
    raw = run.steps["ingest"].outputs["raw_instances"][0].load()
    clean = run.steps["validate"].outputs["clean_instances"][0].load()
    quarantine = run.steps["validate"].outputs["quarantined_instances"][0].load()
    split = run.steps["split"].outputs["split_instances"][0].load()
    assert len(clean) + len(quarantine) == len(raw) > 0
    assert len(quarantine) == 0  # the generator writes only valid rows
    assert isinstance(split, pd.DataFrame) and set(split["split"]) == {"train", "valid", "test"}
    assert len(split) == len(clean)
    assert (iat_home / "reports" / "validation" / "validation_report.html").is_file()

    # Unchanged inputs: every step is served from the cache.
    again = Client().get_pipeline_run(data_pipeline(dataset="synthetic", users=120, seed=2, reports_dir=str(iat_home / "reports" / "validation")).id)
    assert {s.status.value for s in again.steps.values()} == {"cached"}
