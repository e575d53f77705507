import dataclasses
import math
from typing import Annotated, Any, Dict, List, Optional, Tuple

import pandas as pd
from zenml import log_metadata, step
from zenml.logger import get_logger
from zenml.types import MarkdownString

from iat.limits import confined, data_root
from iat.schema import Schema
from iat.transfer import TransferConfig, run_transfer, work_key

TRANSFER_RUNS_DIR = "runs/transfer"  # under the data root (the project folder by default)
logger = get_logger(__name__)


@step
def transfer_evaluation(
    split_instances: pd.DataFrame,
    schema: dict,
    config: Optional[Dict[str, Any]] = None,
    work_dir: Optional[str] = None,
    L: Optional[int] = None,
    seeds: Optional[List[int]] = None,
    epochs: Optional[int] = None,
) -> Tuple[Annotated[pd.DataFrame, "transfer_results"], Annotated[MarkdownString, "transfer_table"]]:
    """In-domain and cross-domain transfer of instance tokens (``iat.transfer``): sources trained on one domain
    (or an early period, or click only), their tokens reused unchanged by fresh downstream rankers, against the
    same rankers without tokens and with in-domain tokens, over the config's seeds.

    Outputs: the table (one row per ranker: mean AUC / GAUC / LogLoss, paired relative deltas vs its base with
    95% CIs over seeds, as floats) and the same table as markdown. The run's sources, token stores and per-seed
    results live in ``work_dir`` (default: ``$IAT_HOME/runs/transfer/<data + config key>``), so a crashed step
    re-run with the same inputs resumes where it stopped.

    ``L``, ``seeds`` and ``epochs`` (when given) override the config: they share names with ``end_to_end``'s
    parameters, so a run or a deployed invoke sets them for the transfer rankers (``epochs``: sources too).
    """
    cfg = TransferConfig.from_dict(config)
    over: Dict[str, Any] = {"L": L, "seeds": seeds}
    if epochs is not None:
        over |= {"train": {**cfg.train, "epochs": epochs}, "source_train": {**cfg.source_train, "epochs": epochs}}
    cfg = dataclasses.replace(cfg, **{k: v for k, v in over.items() if v is not None})
    present = set(map(str, split_instances["domain"].unique()))
    named = {cfg.source_domain, *(cfg.target_domains or [])} - {None}
    if not named <= present:  # a config bound for one data set, run on another (e.g. an invoke with a new dataset)
        logger.warning(f"transfer: domains {sorted(named - present)} are not in this log ({sorted(present)}); using the largest as source")
        cfg = dataclasses.replace(cfg, source_domain=None, target_domains=None)
    work = confined(work_dir, "work_dir") if work_dir else data_root() / TRANSFER_RUNS_DIR / work_key(split_instances, cfg)
    result = run_transfer(split_instances, Schema.from_dict(schema), cfg, work)
    table = result.flat()
    deltas = {
        r["model"]: {k: round(float(r[k]), 4) for k in ("d_auc", "d_auc_lo", "d_auc_hi", "d_gauc", "d_logloss") if math.isfinite(r[k])}
        for _, r in table.iterrows()
        if math.isfinite(r["d_auc"])
    }
    log_metadata({"work_dir": str(work.resolve()), "seeds": list(cfg.seeds), "relative_change_pct": deltas})
    return table, MarkdownString(result.markdown)  # rendered as a table in the run view, not shown as source
