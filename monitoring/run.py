"""The two monitoring jobs, shared by the ZenML steps and the CLI: drift of a token store's windows, and the
simulated A/B test. Each writes HTML reports to a folder and adds its per-day snapshots to the workspace.

Windows are whole days counted from the first token's UTC day: ``reference_days=(23, 30)`` is days 23..29.
Use whole weeks: windows with different weekday mixes differ for that reason alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from iat.abtest import ABConfig, ABResult, simulate_ab
from iat.abtest_scorers import make_scorers
from iat.data.io import read_dataset
from iat.data.synthetic import generate, world_for
from iat.data.synthetic_world import DAY
from iat.drift import DriftConfig
from iat.schema import Schema
from iat.tokens import TokenStore
from iat.tokens.codecs import decode
from monitoring.ab import ab_snapshots, day_timestamp
from monitoring.drift import TAG_CONTROL, TAG_CURRENT, TAG_DAY, TAG_WINDOW, DriftReport, FeatureLayout, Window, drift_report, token_drift_snapshot
from monitoring.workspace import ab_project, add_snapshots, drift_project, open_workspace

@dataclass
class TokenWindows:
    """Decoded tokens and instance ids of the reference window and of every day after it up to the current
    window's end (``later``: the current window plus any gap before it, which rolling daily points may use)."""

    reference: np.ndarray
    reference_ids: np.ndarray
    later: np.ndarray
    later_ids: np.ndarray
    later_day: np.ndarray
    earlier: np.ndarray  # tokens of the days before the reference window (the daily control points read them)
    earlier_day: np.ndarray
    control: np.ndarray | None  # the control window (``control_days``), None when the store does not hold it
    control_ids: np.ndarray | None
    control_days: tuple[int, int] | None
    reference_days: tuple[int, int]
    reference_end: int  # first day after the reference window
    current_start: int  # first day of the current window
    start_ts: int  # UTC midnight of the first token's day
    code_levels: int  # M for HGAQ codes, 0 for dense tokens
    store_label: str  # which store and source model the tokens come from (one dashboard timeline per store)

    @property
    def in_current(self) -> np.ndarray:
        return self.later_day >= self.current_start


def _days(name: str, days: Any) -> tuple[int, int]:
    a, b = (int(x) for x in days)
    if not 0 <= a < b:
        raise ValueError(f"{name}: expected days (start, end) with 0 <= start < end, got {days}")
    return a, b


MIN_CONTROL_DAYS = 7  # a shorter control window would differ from the reference by its weekday mix


def control_days(reference_days: tuple[int, int], current_days: tuple[int, int]) -> tuple[int, int] | None:
    """The control window: as long as the current window and as far before the reference as the current window is
    after it (the same lag), cut at day 0; None when less than ``MIN_CONTROL_DAYS`` (or the current length) is left."""
    gap, length = current_days[0] - reference_days[1], current_days[1] - current_days[0]
    end = reference_days[0] - gap
    start = max(0, end - length)
    return (start, end) if end - start >= min(MIN_CONTROL_DAYS, length) else None


def token_windows(store_path: str | Path, reference_days: Any, current_days: Any) -> TokenWindows:
    """Read the windows of a token store (by token ts), and the control window where the store holds it."""
    ref_d, cur_d = _days("reference_days", reference_days), _days("current_days", current_days)
    if ref_d[1] > cur_d[0]:
        raise ValueError(f"reference window {ref_d} must end before the current window {cur_d} starts")
    store = TokenStore.open(store_path)
    rows = store.all_rows()
    if len(rows["ts"]) == 0:
        raise ValueError(f"token store {store_path} holds no tokens")
    start = int(rows["ts"].min()) // DAY * DAY
    day = (rows["ts"] - start) // DAY
    tokens = decode(rows["tokens"], store.dtype, store.scale)
    ref = (day >= ref_d[0]) & (day < ref_d[1])
    later = (day >= ref_d[1]) & (day < cur_d[1])
    for name, m, d in (("reference", ref, ref_d), ("current", later & (day >= cur_d[0]), cur_d)):
        if m.sum() < 10:
            raise ValueError(f"{name} window days {d} holds {int(m.sum())} tokens; the store spans days 0..{int(day.max())}")
    ctl_d = control_days(ref_d, cur_d)
    ctl = (day >= ctl_d[0]) & (day < ctl_d[1]) if ctl_d else None
    if ctl is not None and ctl.sum() < 10:
        ctl, ctl_d = None, None
    return TokenWindows(
        control=None if ctl is None else tokens[ctl],
        control_ids=None if ctl is None else rows["instance_id"][ctl],
        control_days=ctl_d,
        reference=tokens[ref],
        reference_ids=rows["instance_id"][ref],
        later=tokens[later],
        later_ids=rows["instance_id"][later],
        later_day=day[later],
        earlier=tokens[day < ref_d[0]],
        earlier_day=day[day < ref_d[0]],
        reference_days=ref_d,
        reference_end=ref_d[1],
        current_start=cur_d[0],
        start_ts=start,
        code_levels=int(tokens.shape[2]) if tokens.ndim == 3 else 0,
        store_label=store_label(store_path, store.manifest.get("source") or {}),
    )


def store_label(store_path: str | Path, source: dict[str, Any]) -> str:
    """``<store folder> (<source model> <version>)``: names the store's own drift project."""
    what = " ".join(str(source[k]) for k in ("model", "version") if source.get(k) is not None)
    return f"{Path(store_path).resolve().name}" + (f" ({what})" if what else "")


def _rows_for(instances: pd.DataFrame, ids: np.ndarray) -> pd.DataFrame:
    """The instance rows of ``ids``, in that order (tokens and rows are matched by instance_id)."""
    idx = pd.Index(instances["instance_id"]).get_indexer(ids)
    if (idx < 0).any():
        raise ValueError(f"{int((idx < 0).sum())} tokens have no row in the dataset (instance_id not found)")
    return instances.iloc[idx].reset_index(drop=True)


def run_drift(
    store_path: str | Path,
    reference_days: Any,
    current_days: Any,
    dataset_path: str | Path | None = None,
    cfg: DriftConfig = DriftConfig(),
    workspace: str | Path | None = None,
    reports_dir: str | Path = "reports/monitoring",
) -> tuple[DriftReport, dict[str, Path], int]:
    """Whole-window drift report (HTML in ``reports_dir``), then daily points in the workspace.

    The point of day d compares the ``cfg.rolling_days`` days ending on d with the reference: whole weeks, so a
    point never differs from the reference by its weekday mix alone. Days whose rolling window would reach into
    the reference window get no point (leave a gap of rolling_days - 1 days to have a point for every day).
    Beside it, where the store holds it, the day's control point: the token drift of the week as far before the
    reference (``control_days``) against the reference, i.e. what the same lag shows on an unshifted stretch of
    the log; a dashboard line above its control line is drift, one level with it is the log's own week-to-week noise.
    With ``dataset_path`` (instances.parquet + schema.yaml of the same instances) raw features drift too, and
    prediction drift when the rows carry a ``prediction`` column. Returns (report, html paths, snapshots added).
    """
    win = token_windows(store_path, reference_days, current_days)
    rows_ref = rows_later = None
    schema: Schema | None = None
    layout: FeatureLayout | None = None
    if dataset_path is not None:
        instances, schema = read_dataset(dataset_path)
        rows_ref, rows_later = _rows_for(instances, win.reference_ids), _rows_for(instances, win.later_ids)
        layout = FeatureLayout.of(schema, rows_ref, cfg.max_categories)  # one layout: every snapshot, same series

    def report_for(mask: np.ndarray, day: int, tags: tuple[str, ...], detail: bool, control: Window | None = None) -> DriftReport:
        rows = None if rows_later is None else rows_later[mask].reset_index(drop=True)
        stamp = day_timestamp(win.start_ts, day)
        return drift_report(win.reference, win.later[mask], cfg, rows_ref, rows, schema, stamp, tags, detail=detail, layout=layout, control=control)

    control = None
    if win.control is not None:
        control = Window(win.control, None if rows_ref is None else _rows_for(instances, win.control_ids))
    report = report_for(win.in_current, win.current_start, (TAG_WINDOW,), True, control)
    report.control_days = win.control_days
    paths = report.save_html(reports_dir)
    added = 0
    if workspace is not None:
        ws = open_workspace(workspace)
        proj = drift_project(ws, win.store_label, win.code_levels, layout)
        first_full = win.reference_end + cfg.rolling_days - 1
        for d in np.unique(win.later_day[win.in_current]):
            m = (win.later_day > d - cfg.rolling_days) & (win.later_day <= d)
            if d < first_full or m.sum() < 10:
                continue
            snaps = list(report_for(m, int(d), (TAG_DAY, TAG_CURRENT), detail=False).snapshots.values())
            ctl_d = control_days(win.reference_days, (int(d) - cfg.rolling_days + 1, int(d) + 1))
            ctl = (win.earlier_day >= ctl_d[0]) & (win.earlier_day < ctl_d[1]) if ctl_d else None
            if ctl is not None and ctl.sum() >= 10:  # the control pair reads as the whole-window one: control -> reference
                stamp = day_timestamp(win.start_ts, int(d))
                snaps.append(token_drift_snapshot(win.earlier[ctl], win.reference, cfg, stamp, (TAG_DAY, TAG_CONTROL), detail=False))
            added += len(add_snapshots(ws, proj, snaps))
    return report, paths, added


def run_ab(
    users: int = 2_000,
    seed: int = 0,
    ab: ABConfig = ABConfig(),
    control: str = "ranker:base",
    treatment: str = "ranker:iat",
    workspace: str | Path | None = None,
    reports_dir: str | Path = "reports/monitoring",
    progress: bool = True,
) -> tuple[ABResult, Path, int]:
    """Simulate the A/B test on the synthetic world of ``(users, seed)``: arms are scorer specs
    (``iat.abtest_scorers``; by default the base ranker vs the +IAT ranker) trained on the log before
    ``ab.start_day``. Returns (result, HTML path, snapshots added)."""
    days = ab.start_day + ab.days
    log, schema = generate(users, seed=seed, days=days, progress=progress)
    world = world_for(users, seed=seed, days=days)
    history = log[log["ts"] < world.start_ts + ab.start_day * DAY].reset_index(drop=True)
    arms = make_scorers((control, treatment), history, schema, seed, progress=progress)
    result = simulate_ab(world, history, arms[0], arms[1], ab, progress=progress)
    snaps = ab_snapshots(result, world.start_ts, name=f"{control} vs {treatment}")
    out = Path(reports_dir)
    out.mkdir(parents=True, exist_ok=True)
    html = out / "ab_test.html"
    snaps[-1].save_html(str(html))  # the last cumulative snapshot: the whole experiment
    added = 0
    if workspace is not None:
        ws = open_workspace(workspace)
        added = len(add_snapshots(ws, ab_project(ws, control, treatment), snaps))
    return result, html, added
