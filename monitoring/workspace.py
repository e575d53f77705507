"""The local Evidently workspace (under the project's data folder) with one project for drift and one for
the A/B test, their dashboards, and adding snapshots.

Dashboards are written whole on every ``project`` call (not appended to), so re-running a pipeline never
duplicates panels. Panels select points by metric type, metric parameters and snapshot tags.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from evidently.core.report import Snapshot
from evidently.sdk.models import DashboardModel, DashboardPanelPlot, DashboardTabModel, PanelMetric
from evidently.sdk.panels import counter_panel, line_plot_panel, text_panel
from evidently.ui.workspace import Project, Workspace

from iat.abtest import ARMS, METRICS
from monitoring.ab import TAG_CUMULATIVE, TAG_DAILY
from monitoring.drift import PREDICTION, TAG_CONTROL, TAG_CURRENT, TAG_DAY, TAG_FEATURES, TAG_TOKENS, FeatureLayout

DRIFT_PROJECT = "IAT drift"
AB_PROJECT = "IAT online A/B test"
_RATE_TITLES = {"ctr": "CTR (clicks / impressions)", "cvr": "CVR (conversions / clicks)", "revenue": "Revenue per impression"}


def workspace_path(home: str | Path | None = None) -> Path:
    """``<project home>/data/evidently``; the home is ``IAT_HOME`` or the working directory."""
    return Path(home or os.environ.get("IAT_HOME") or Path.cwd()).resolve() / "data" / "evidently"


def open_workspace(path: str | Path) -> Workspace:
    Path(path).mkdir(parents=True, exist_ok=True)
    return Workspace(str(path))


def drift_dashboard(code_levels: int = 0, layout: FeatureLayout | None = None) -> DashboardModel:
    """Token, feature and prediction drift panels; the code-usage panel only for stores of HGAQ codes, the
    per-group and unseen-id lines only when the feature ``layout`` is known."""
    # a snapshot matches a series when it has every tag of it: current and control points differ by one tag
    tok, feat, ctl = [TAG_TOKENS, TAG_DAY, TAG_CURRENT], [TAG_FEATURES, TAG_DAY, TAG_CURRENT], [TAG_TOKENS, TAG_DAY, TAG_CONTROL]
    panels = [
        text_panel(
            "Drift",
            "Each point: the week up to that day against the reference window (the end of the training period). Control "
            "lines: the week as far before the reference against it (the log's own week-to-week change at that lag).",
        ),
        line_plot_panel(
            "Share of drifted token dimensions",
            [
                PanelMetric(legend="share of dims", metric="DriftedColumnsCount", metric_labels={"value_type": "share"}, tags=tok),
                PanelMetric(legend="control (same lag)", metric="DriftedColumnsCount", metric_labels={"value_type": "share"}, tags=ctl),
            ],
            "Per-dimension test on tok_0..tok_{D-1} (normed Wasserstein by default); above the control line = drift",
            size="half",
        ),
        line_plot_panel(
            "Embedding drift (domain-classifier AUC)",
            [PanelMetric(legend="AUC", metric="DomainClassifierDrift", tags=tok), PanelMetric(legend="control (same lag)", metric="DomainClassifierDrift", tags=ctl)],
            "0.5 = the windows are indistinguishable",
            size="half",
        ),
        line_plot_panel(
            "Share of drifted raw features",
            [PanelMetric(legend="all features", metric="DriftedColumnsCount", metric_labels={"value_type": "share", "columns": str(layout.columns)} if layout else {"value_type": "share"}, tags=feat)]
            + [
                PanelMetric(legend=group, metric="DriftedColumnsCount", metric_labels={"value_type": "share", "columns": str(cols)}, tags=feat)
                for group, cols in (layout.groups.items() if layout else ())
            ],
            "Cross features are lifetime counts: they drift week on week in any log (higher threshold in the verdict)",
            size="half",
        ),
        line_plot_panel(
            "Prediction drift",
            [PanelMetric(legend="prediction", metric="ValueDrift", metric_labels={"column": PREDICTION}, tags=feat)],
            "Normed Wasserstein distance of the model's pCTR",
            size="half",
        ),
    ]
    if layout and layout.id_columns:
        unseen = [PanelMetric(legend=c, metric="UnseenValueShare", metric_labels={"column": c}, tags=feat) for c in layout.id_columns]
        panels.append(line_plot_panel("Unseen ids (share of current rows)", unseen, "Ids the reference window never saw: a new catalogue shows here"))
    if code_levels:
        levels = [
            PanelMetric(legend=f"level {m}", metric="CodeLevelDrift", metric_labels={"level": str(m), "label": "mean"}, tags=tok)
            for m in range(code_levels)
        ]
        panels.insert(1, line_plot_panel("HGAQ code-usage drift per level (mean JS distance)", levels, "Noise-corrected, per sub-token, averaged per level"))
    return _dashboard("Drift", panels)


def ab_dashboard(control: str, treatment: str) -> DashboardModel:
    """The A/B dashboard, its heading naming the arms that ran (scorer specs, e.g. ranker:base, ranker:iat)."""
    daily, cum = [TAG_DAILY], [TAG_CUMULATIVE]
    panels: list[DashboardPanelPlot] = [
        text_panel("Online A/B test", f"{ARMS[0]} = {control}, {ARMS[1]} = {treatment}; users randomised by a hash of their id."),
    ]
    for rate in METRICS:
        panels.append(
            line_plot_panel(
                f"Daily {_RATE_TITLES[rate]} per arm",
                [PanelMetric(legend=arm, metric="ArmRate", metric_labels={"arm": arm, "rate": rate}, tags=daily) for arm in ARMS],
                size="half",
            )
        )
        panels.append(
            line_plot_panel(
                f"Uplift of {rate.upper()} so far, with 95% CI",
                [
                    PanelMetric(legend=legend, metric="ArmUplift", metric_labels={"rate": rate, "label": label}, tags=cum)
                    for label, legend in (("uplift", "uplift"), ("lo", "CI low"), ("hi", "CI high"))
                ],
                "Relative uplift (treatment / control - 1), bootstrap over users",
                size="half",
            )
        )
    panels.append(
        counter_panel(
            "Sample-ratio test p-value (latest)",
            [PanelMetric(legend="p-value", metric="SampleRatio", tags=cum)],
            "Below 0.001: the assignment or logging is broken",
            size="half",
        )
    )
    return _dashboard("A/B test", panels)


def _dashboard(tab: str, panels: list[DashboardPanelPlot]) -> DashboardModel:
    return DashboardModel(tabs=[DashboardTabModel(title=tab, panels=[p.id for p in panels])], panels=panels)


def project(ws: Workspace, name: str, description: str, dashboard: DashboardModel) -> Project:
    """The workspace's project called ``name`` (created if missing) with ``dashboard`` written over its old one."""
    found = ws.search_project(name)
    proj = found[0] if found else ws.create_project(name, description)
    ws.save_dashboard(proj.id, dashboard)
    return proj


def drift_project(ws: Workspace, store: str, code_levels: int = 0, layout: FeatureLayout | None = None) -> Project:
    """The drift project of one token store: snapshots of different stores never share a timeline."""
    return project(ws, f"{DRIFT_PROJECT}: {store}", f"Token, raw-feature and prediction drift of store {store} against its reference window", drift_dashboard(code_levels, layout))


def ab_project(ws: Workspace, control: str, treatment: str) -> Project:
    """The A/B project; its dashboard is rewritten for the arms of the latest run."""
    return project(ws, AB_PROJECT, f"Online A/B test: {control} vs {treatment}", ab_dashboard(control, treatment))


def add_snapshots(ws: Workspace, proj: Project, snapshots: Iterable[Snapshot]) -> list[str]:
    return [str(ws.add_run(proj.id, s).id) for s in snapshots]
