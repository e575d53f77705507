"""Run an ExpectationSuite on a pandas frame with Great Expectations and collect per-expectation outcomes."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field

# Ephemeral contexts must not try to reach the network (no analytics); set before GX is imported.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import great_expectations as gx  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from great_expectations import ExpectationSuite  # noqa: E402
from great_expectations.core.batch_definition import BatchDefinition  # noqa: E402
from great_expectations.data_context.types.base import ProgressBarsConfig  # noqa: E402
from tqdm import tqdm  # noqa: E402

from quality.suite import expectation_columns, expectation_label  # noqa: E402

logging.getLogger("great_expectations").setLevel(logging.WARNING)

RESULT_FORMAT = {"result_format": "COMPLETE", "partial_unexpected_count": 5}
_PROGRESS_MIN_ROWS = 100_000


@dataclass(frozen=True)
class Outcome:
    """One expectation's result. ``unexpected_rows`` are positions in the validated frame (row-level only)."""

    label: str
    description: str
    level: str  # "row" | "table"
    columns: tuple[str, ...]
    success: bool
    unexpected_count: int = 0
    unexpected_rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64))
    non_null_count: int | None = None
    observed: str | None = None  # what a table-level check saw (e.g. the dtype)
    examples: tuple = ()


def run_suite(frame: pd.DataFrame, suite: ExpectationSuite) -> list[Outcome]:
    """Validate ``frame`` (0..n-1 RangeIndex) with every expectation of ``suite``; Outcomes in suite order.

    GX's pandas engine copies and filters the *whole* batch frame for each metric, so one batch costs
    width x expectations (55 s on a 1M-row synthetic log). The suite is therefore evaluated one column
    group at a time, each group on a batch holding only its columns, and table-level expectations
    (column existence, column dtype) on the zero-row slice of the frame, which has the same columns and
    dtypes. Each group is a real GX validation of the suite's own expectation objects. GX's pandas map
    metrics also mis-align masks on other indexes (gx 1.24: a regex check passed a bad value under index
    10..14), hence the RangeIndex requirement.
    """
    if not frame.index.equals(pd.RangeIndex(len(frame))):
        raise ValueError("run_suite needs a frame with a 0..n-1 RangeIndex")
    groups: dict[tuple[str, ...], list] = {}
    for exp in suite.expectations:
        table_level = (exp.meta or {}).get("level") == "table"
        reads = tuple((exp.meta or {}).get("reads", ()))  # columns a row condition reads
        groups.setdefault(() if table_level else expectation_columns(exp.configuration.kwargs) + reads, []).append(exp)
    by_label: dict[str, Outcome] = {}
    for cols, exps in tqdm(groups.items(), desc=f"validate {suite.name}", unit="group",
                           disable=len(frame) < _PROGRESS_MIN_ROWS):
        part = frame.iloc[:0] if not cols else frame[list(cols)]
        sub = ExpectationSuite(name=f"{suite.name}[{', '.join(cols) or 'table'}]", expectations=exps)
        for r in _validate(part, sub):
            outcome = _outcome(r)
            by_label[outcome.label] = outcome
    labels = [expectation_label(e.configuration) for e in suite.expectations]
    assert len(set(labels)) == len(labels) == len(by_label), f"suite {suite.name}: labels must be unique"
    return [by_label[label] for label in labels]


def _validate(part: pd.DataFrame, suite: ExpectationSuite) -> list:
    # GX copies the batch frame for many metrics: a consolidated copy (one block per dtype) copies fast.
    batch = _batch_definition().get_batch(batch_parameters={"dataframe": part.copy()})
    return batch.validate(suite, result_format=RESULT_FORMAT).results


@functools.cache
def _batch_definition() -> BatchDefinition:
    """One in-memory GX context per process: setting it up re-serializes its config (~30 ms a step)."""
    ctx = gx.get_context(mode="ephemeral")
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False)
    return (
        ctx.data_sources.add_pandas("iat_log")
        .add_dataframe_asset("instances")
        .add_batch_definition_whole_dataframe("whole_frame")
    )


def _outcome(r) -> Outcome:  # noqa: ANN001 - an ExpectationValidationResult
    cfg = r.expectation_config
    label = expectation_label(cfg)
    errors = _exception_messages(r.exception_info or {})
    if errors:
        raise RuntimeError(f"Great Expectations could not evaluate {label}: {'; '.join(errors)}")
    columns = expectation_columns(cfg.kwargs)
    res = r.result or {}
    meta = cfg.meta or {}
    level = meta.get("level", "row")
    if "unexpected_index_list" not in res:
        if level == "row" and not r.success:
            raise RuntimeError(f"Great Expectations failed {label} without naming the rows: {res}")
        observed = res.get("observed_value")
        return Outcome(label, meta.get("description", label), level, columns, bool(r.success),
                       observed=None if observed is None else str(observed))
    rows = np.asarray(res["unexpected_index_list"], dtype=np.int64)
    count = int(res["unexpected_count"])
    # COMPLETE lists every failing row; quarantine relies on it, so a short list is a hard error.
    assert len(rows) == count, f"{label}: GX listed {len(rows)} of {count} unexpected rows"
    non_null = int(res["element_count"]) - int(res.get("missing_count") or 0)
    return Outcome(label, meta.get("description", label), level, columns, bool(r.success), count,
                   np.sort(rows), non_null, examples=tuple(res.get("partial_unexpected_list") or ())[:5])


def _exception_messages(info: dict) -> list[str]:
    """GX reports an exception either flat or keyed by the metric that raised it."""
    if info.get("raised_exception"):
        return [str(info.get("exception_message"))]
    nested = [v for v in info.values() if isinstance(v, dict) and v.get("raised_exception")]
    return [str(v.get("exception_message")) for v in nested]
