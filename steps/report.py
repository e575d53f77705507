from typing import Annotated, Any, Dict, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step
from zenml.types import MarkdownString

from iat.downstream import RankerBundle
from iat.metrics import oracle_auc
from iat.report import format_result_table, result_table as make_table


@step
def result_table(
    base: RankerBundle, iat: RankerBundle, split_instances: pd.DataFrame, transfer: Optional[str] = None
) -> Tuple[Annotated[Dict[str, Any], "result_table"], Annotated[MarkdownString, "result_table_md"]]:
    """The run's result: base ranker vs the same ranker + IAT tokens on the test split (AUC / GAUC / LogLoss with
    95% CIs, relative change, oracle AUC on synthetic data). ``transfer``: the transfer evaluation's markdown table, when
    the pipeline runs one (kept under ``transfer`` and printed after the main table). The dict is the pipeline's output (also the answer of a
    deployed pipeline's ``/invoke``); the markdown copy is what the dashboard shows."""
    table = make_table(
        [("base", base.spec.name, base.metrics), ("+IAT", iat.spec.name, iat.metrics)], oracle=oracle_auc(split_instances)
    )
    if transfer is not None:
        table["transfer"] = transfer
    log_metadata({"delta_vs_base": table["delta_vs_base"], "oracle_auc": table["oracle_auc"] or "n/a"}, infer_artifact=True, artifact_name="result_table")
    return table, MarkdownString(format_result_table(table))
