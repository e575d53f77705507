"""Evidently metrics for what Evidently does not measure itself; each one calls the core library (``iat``).

- ``DomainClassifierDrift``: embedding-level drift of dense tokens (``iat.drift.domain_classifier_auc``).
  Evidently's own ``EmbeddingsDrift`` runs a t-SNE of 5,000 rows for its plot on every call (about two minutes
  on two cores), so it is not used.
- ``CodeLevelDrift``: code-usage drift of one HGAQ level over its sub-token columns (``iat.drift.code_usage_drift``).
- ``UnseenValueShare``: share of current rows with an id the reference never saw (``iat.drift.unseen_share``).
- ``AUCChange``: the model's AUC on the current window minus that on the reference (labels known by then): the
  world can move in a way no input distribution shows (users' interests reshuffled) and still cost accuracy.
- ``ArmRate`` / ``ArmUplift`` / ``SampleRatio``: A/B metrics over an impression table (``iat.abtest``).

The metrics' parameters become the labels of their points in the workspace (dashboards filter on them), so no
parameter may vary from one snapshot to the next of the same series.
"""

from __future__ import annotations

from typing import List, Optional

import numpy as np
import pandas as pd
from evidently import Dataset
from evidently.core.metric_types import ByLabelCalculation, ByLabelMetric, SingleValueCalculation, SingleValueMetric
from evidently.core.report import Context
from evidently.legacy.renderers.html_widgets import CounterData, counter, table_data

from iat.abtest import ARMS, METRICS, srm_test, uplift
from iat.drift import code_usage_drift, domain_classifier_auc, unseen_share
from iat.metrics import auc


def _frame(data: Optional[Dataset], what: str) -> pd.DataFrame:
    if data is None:
        raise ValueError(f"{what} needs a reference dataset")
    return data.as_dataframe()


class DomainClassifierDrift(SingleValueMetric):
    """Held-out AUC of a classifier telling current rows from reference rows over ``columns`` (0.5 = no drift)."""

    columns: List[str]
    threshold: float = 0.6
    seed: int = 0


class DomainClassifierDriftCalculation(SingleValueCalculation[DomainClassifierDrift]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]):
        cols = self.metric.columns
        ref = _frame(reference_data, "DomainClassifierDrift")[cols].to_numpy(np.float64)
        cur = current_data.as_dataframe()[cols].to_numpy(np.float64)
        value = domain_classifier_auc(ref, cur, seed=self.metric.seed)
        result = self.result(value)
        verdict = "drift detected" if value >= self.metric.threshold else "no drift"
        result.widget = [
            counter(
                title=self.display_name(),
                counters=[
                    CounterData.float("held-out AUC (0.5 = same distribution)", value, 3),
                    CounterData("verdict", f"{verdict} (threshold {self.metric.threshold})"),
                    CounterData.int("dimensions", len(cols)),
                ],
            )
        ]
        return result

    def display_name(self) -> str:
        return f"Embedding drift: domain-classifier AUC over {len(self.metric.columns)} dimensions"


class CodeLevelDrift(ByLabelMetric):
    """Code-usage drift of one HGAQ level: ``mean`` JS distance over its sub-tokens and the ``share`` above threshold."""

    level: int
    columns: List[str]  # one integer code column per sub-token, all of this level
    threshold: float = 0.1
    n_codes: int = 256


class CodeLevelDriftCalculation(ByLabelCalculation[CodeLevelDrift]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]):
        cols = self.metric.columns
        ref = _frame(reference_data, "CodeLevelDrift")[cols].to_numpy(np.int64)[:, :, None]
        cur = current_data.as_dataframe()[cols].to_numpy(np.int64)[:, :, None]
        d = code_usage_drift(ref, cur, self.metric.threshold, self.metric.n_codes)
        result = self.result({"mean": float(d.level_mean[0]), "share": float(d.level_share[0])})
        rows = [[c, f"{v:.3f}", "drift" if v > self.metric.threshold else ""] for c, v in zip(cols, d.distance[:, 0])]
        result.widget = [
            counter(
                title=self.display_name(),
                counters=[
                    CounterData.float("mean JS distance", float(d.level_mean[0]), 3),
                    CounterData.float("share of sub-tokens drifted", float(d.level_share[0]), 3),
                ],
            ),
            table_data(column_names=["sub-token", "JS distance (noise removed)", ""], data=rows, title=f"Level {self.metric.level} per sub-token"),
        ]
        return result

    def display_name(self) -> str:
        return f"Code-usage drift, level {self.metric.level} ({len(self.metric.columns)} sub-tokens)"

    def label_display_name(self, label: object) -> str:
        return f"{self.display_name()}: {label}"


class UnseenValueShare(SingleValueMetric):
    """Share of current rows whose ``column`` value never occurs in the reference (new ids, a new catalogue)."""

    column: str


class UnseenValueShareCalculation(SingleValueCalculation[UnseenValueShare]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]):
        col = self.metric.column
        ref = _frame(reference_data, "UnseenValueShare")[col].to_numpy()
        cur = current_data.as_dataframe()[col].to_numpy()
        value = unseen_share(ref, cur)
        result = self.result(value)
        result.widget = [counter(title=self.display_name(), counters=[CounterData.float("share of current rows", value, 3)])]
        return result

    def display_name(self) -> str:
        return f"Unseen values of '{self.metric.column}' (not in the reference window)"


class AUCChange(SingleValueMetric):
    """AUC of ``prediction`` against ``label`` on the current rows minus that on the reference rows."""

    prediction: str
    label: str


class AUCChangeCalculation(SingleValueCalculation[AUCChange]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]):
        m = self.metric
        ref, cur = _frame(reference_data, "AUCChange"), current_data.as_dataframe()
        a_ref, a_cur = (auc(d[m.label].to_numpy(np.int8), d[m.prediction].to_numpy(np.float64)) for d in (ref, cur))
        result = self.result(a_cur - a_ref)
        result.widget = [
            counter(
                title=self.display_name(),
                counters=[CounterData.float("reference AUC", a_ref, 4), CounterData.float("current AUC", a_cur, 4), CounterData.float("change", a_cur - a_ref, 4)],
            )
        ]
        return result

    def display_name(self) -> str:
        return f"Model AUC change ('{self.metric.prediction}' against '{self.metric.label}')"


class ArmRate(SingleValueMetric):
    """A ratio-of-sums metric of ``iat.abtest.METRICS`` (ctr, cvr, revenue) over one arm's impressions."""

    arm: str
    rate: str


class ArmRateCalculation(SingleValueCalculation[ArmRate]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]):
        if self.metric.rate not in METRICS:
            raise ValueError(f"ArmRate: unknown rate '{self.metric.rate}', expected one of {sorted(METRICS)}")
        num, den = METRICS[self.metric.rate]
        df = current_data.as_dataframe()
        rows = df[df["arm"] == self.metric.arm]
        value = float(rows[num].sum() / rows[den].sum()) if rows[den].sum() > 0 else float("nan")
        result = self.result(value)
        result.widget = [counter(title=self.display_name(), counters=[CounterData.float(self.metric.rate, value, 4), CounterData.int("impressions", len(rows))])]
        return result

    def display_name(self) -> str:
        return f"{self.metric.rate.upper()} of arm '{self.metric.arm}'"


class ArmUplift(ByLabelMetric):
    """Relative uplift (treatment / control - 1) of a rate with its per-user bootstrap CI: labels uplift, lo, hi."""

    rate: str
    n_boot: int = 400
    alpha: float = 0.05
    seed: int = 0


class ArmUpliftCalculation(ByLabelCalculation[ArmUplift]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]):
        u = uplift(current_data.as_dataframe(), self.metric.rate, self.metric.n_boot, self.metric.alpha, self.metric.seed)
        result = self.result({"uplift": u.uplift, "lo": u.lo, "hi": u.hi})
        level = f"{1 - self.metric.alpha:.0%}"
        result.widget = [
            counter(
                title=self.display_name(),
                counters=[
                    CounterData("uplift", f"{u.uplift:+.2%}"),
                    CounterData(f"{level} CI (bootstrap over users)", f"[{u.lo:+.2%}, {u.hi:+.2%}]"),
                    CounterData("control / treatment", f"{u.control:.4g} / {u.treatment:.4g}"),
                    CounterData("significant", "yes" if u.significant else "no"),
                ],
            )
        ]
        return result

    def display_name(self) -> str:
        return f"Uplift of {self.metric.rate.upper()} ({ARMS[1]} vs {ARMS[0]})"

    def label_display_name(self, label: object) -> str:
        return f"{self.display_name()}: {label}"


class SampleRatio(SingleValueMetric):
    """p-value of the sample-ratio-mismatch chi-square test on users per arm (tiny = broken assignment)."""

    treatment_share: float = 0.5


class SampleRatioCalculation(SingleValueCalculation[SampleRatio]):
    def calculate(self, context: Context, current_data: Dataset, reference_data: Optional[Dataset]):
        users = current_data.as_dataframe().groupby("user_id")["arm"].first()
        s = srm_test(int((users == ARMS[0]).sum()), int((users == ARMS[1]).sum()), self.metric.treatment_share)
        result = self.result(s["p_value"])
        result.widget = [
            counter(
                title=self.display_name(),
                counters=[
                    CounterData.int(f"users {ARMS[0]}", int(s["users_control"])),
                    CounterData.int(f"users {ARMS[1]}", int(s["users_treatment"])),
                    CounterData.float("chi-square p-value", s["p_value"], 4),
                ],
            )
        ]
        return result

    def display_name(self) -> str:
        return "Sample ratio mismatch (users per arm)"
