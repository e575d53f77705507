from typing import Annotated, Tuple

import pandas as pd
from zenml import log_metadata, step
from zenml.types import HTMLString

from iat.limits import confined
from iat.schema import Schema
from quality import QuarantineThresholdError, validate_log, write_validation_outputs


@step
def validate(
    raw_instances: pd.DataFrame, schema: dict, max_quarantine_share: float = 0.05, reports_dir: str = "reports/validation"
) -> Tuple[
    Annotated[pd.DataFrame, "clean_instances"],
    Annotated[pd.DataFrame, "quarantined_instances"],
    Annotated[HTMLString, "validation_report"],
]:
    """Great Expectations validation: clean rows go on, failing rows are quarantined with their reasons.

    The quarantine file and report are written before the threshold check can fail the step, so a failed
    run still leaves every rejected row on disk.
    """
    reports = confined(reports_dir, "reports_dir")  # before the work: a refused path fails at once
    try:
        result = validate_log(raw_instances, Schema.from_dict(schema), max_quarantine_share=max_quarantine_share)
    except QuarantineThresholdError as e:
        write_validation_outputs(e.result, reports)
        raise
    paths = write_validation_outputs(result, reports)
    log_metadata(
        {"input_rows": result.n_input, "clean_rows": len(result.clean), "quarantined_rows": len(result.quarantine), "failures": dict(result.counts)},
        infer_artifact=True,
        artifact_name="clean_instances",
    )
    return result.clean, result.quarantine, HTMLString(paths["report"].read_text())
