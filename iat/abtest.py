"""Online A/B test on the synthetic world, simulated honestly, and its analysis.

Users arrive over days (more active users more often, as in the log); each request (a new session, with its own
hidden intent) gets ``candidates`` items drawn the way the generator draws impressions (``ITEM_SOURCES``);
the user's arm ranks them with its ``Scorer`` and shows the top ``slots`` at positions 1..slots. Clicks and
conversions are drawn from the world's true probabilities at the shown position; revenue = conversion x price.

Honesty rules:
- a scorer sees the candidate rows with the columns of the instance log (ids, ts, domain, every schema feature
  including cross features), never the oracle columns ``p_click`` / ``p_conversion`` nor labels;
- cross features (the user's past) and item-past features (the item's and seller's past over all users) come from
  the arm's own log: the shared pre-experiment log plus the impressions that arm showed earlier (their
  conversions are never known: the simulator draws no label delay). Requests are processed in
  ``rounds_per_day`` time blocks; a request sees every impression of earlier blocks, not those of its own block
  (a simplification for speed, the same for both arms);
- candidates are scored as if shown at position 1 (position is decided by the ranking itself);
- a scorer with an ``observe(rows)`` method is told, after each block, the rows its arm showed (with labels),
  e.g. to append their tokens to its store.

Users are randomised to arms by a salted hash of the user id (stable across days and runs). Analysis: per-day
CTR (clicks / impressions), CVR (conversions / clicks) and revenue per impression per arm; relative uplift
(treatment / control - 1) with 95% CIs from a bootstrap over users, the randomisation unit (resampling
impressions would ignore that a user's impressions are correlated and give CIs that are too narrow); a
sample-ratio-mismatch chi-square test on users per arm.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iat.data.synthetic import CROSS_NUMERIC, add_cross_features, add_item_features, feature_frame, sample_rows
from iat.data.synthetic_world import DAY, SyntheticWorld
from iat.schema import ORACLE_COLUMNS

Scorer = Callable[[pd.DataFrame], np.ndarray]
ARMS: tuple[str, str] = ("control", "treatment")
# metric -> (numerator, denominator) columns of the impression table; every metric is a ratio of sums
METRICS: dict[str, tuple[str, str]] = {
    "ctr": ("click", "impression"),
    "cvr": ("conversion", "click"),
    "revenue": ("revenue", "impression"),
}
# what a request shares across its candidates (the rest is per item)
_CONTEXT_KEYS = ("user", "ts", "hour", "weekday", "domain", "device", "network", "page", "weather", "intent")
# columns the arm logs keep: what the cross and item-past features read
_LOG_COLUMNS = ["user_id", "item_id", "seller_id", "ts", "click", "conversion", "conversion_ts", "category", "brand"]


@dataclass(frozen=True)
class ABConfig:
    start_day: int = 30  # day of the world the experiment starts; the history must end before it
    days: int = 14
    requests_per_day: int = 2_000
    candidates: int = 20
    slots: int = 3
    rounds_per_day: int = 4
    treatment_share: float = 0.5
    salt: str = "iat-ab"
    n_boot: int = 400
    alpha: float = 0.05
    seed: int = 0
    keep_candidates: bool = False  # keep every scored candidate (for off-policy replay); memory grows with K

    def __post_init__(self) -> None:
        for name in ("days", "requests_per_day", "candidates", "slots", "rounds_per_day", "n_boot"):
            if getattr(self, name) < 1:
                raise ValueError(f"ABConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.slots > self.candidates:
            raise ValueError(f"ABConfig.slots ({self.slots}) cannot exceed candidates ({self.candidates})")
        if not 0 < self.treatment_share < 1:
            raise ValueError(f"ABConfig.treatment_share must lie in (0, 1), got {self.treatment_share}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"ABConfig.alpha must lie in (0, 1), got {self.alpha}")
        if self.rounds_per_day > 24:
            raise ValueError(f"ABConfig.rounds_per_day must be <= 24 (blocks of whole hours), got {self.rounds_per_day}")


@dataclass
class Uplift:
    metric: str
    control: float
    treatment: float
    uplift: float  # treatment / control - 1
    lo: float
    hi: float

    @property
    def significant(self) -> bool:
        return self.lo > 0 or self.hi < 0


@dataclass
class ABResult:
    config: ABConfig
    impressions: pd.DataFrame  # one row per shown item: day, arm, request_id, user_id, ..., click, conversion, revenue
    daily: pd.DataFrame  # one row per (day, arm)
    cumulative: pd.DataFrame  # uplift with CI per (day, metric) over the experiment so far
    summary: dict[str, Uplift]  # whole experiment
    srm: dict[str, float]
    candidates: pd.DataFrame | None = None  # every scored candidate, when config.keep_candidates
    arm_share: dict[str, float] = field(default_factory=dict)


# -- randomisation ------------------------------------------------------------------------------------------
def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def assign_arms(user_ids: Any, treatment_share: float = 0.5, salt: str = "iat-ab") -> np.ndarray:
    """Arm of each user (0 = control, 1 = treatment): a salted hash of the id, so stable across days and runs."""
    u = np.asarray(user_ids, dtype=np.int64).view(np.uint64)
    salt_hash = _splitmix64(np.array([sum(ord(c) << (8 * (i % 8)) for i, c in enumerate(salt))], dtype=np.uint64))[0]
    h = _splitmix64(u ^ salt_hash)
    return ((h >> np.uint64(11)).astype(np.float64) / 2.0**53 < treatment_share).astype(np.int8)


def srm_test(n_control: int, n_treatment: int, treatment_share: float = 0.5) -> dict[str, float]:
    """Sample-ratio mismatch: chi-square (1 df) of users per arm against the planned split; a tiny p-value
    (e.g. < 0.001) means the assignment or the logging is broken and the uplift cannot be trusted."""
    n = n_control + n_treatment
    if n == 0:
        raise ValueError("srm_test: no users in either arm")
    exp_t, exp_c = n * treatment_share, n * (1 - treatment_share)
    chi2 = (n_treatment - exp_t) ** 2 / exp_t + (n_control - exp_c) ** 2 / exp_c
    return {"users_control": float(n_control), "users_treatment": float(n_treatment), "chi2": chi2, "p_value": math.erfc(math.sqrt(chi2 / 2))}


# -- analysis ----------------------------------------------------------------------------------------------
def _per_user(frame: pd.DataFrame, num: str, den: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    g = frame.groupby("user_id", sort=True)
    arm = g["arm"].agg(["min", "max"])
    if (arm["min"] != arm["max"]).any():
        raise ValueError("a user appears in both arms; the analysis needs user-level randomisation")
    return g[num].sum().to_numpy(np.float64), g[den].sum().to_numpy(np.float64), (arm["min"] == ARMS[1]).to_numpy()


def ratio_uplift_ci(
    num_c: np.ndarray,
    den_c: np.ndarray,
    num_t: np.ndarray,
    den_t: np.ndarray,
    n_boot: int = 400,
    alpha: float = 0.05,
    seed: int = 0,
    paired: bool = False,
) -> tuple[float, float, float, float, float]:
    """(control ratio, treatment ratio, uplift, lo, hi) of ratio-of-sums metrics, bootstrapping clusters.

    Inputs are per-cluster (user) sums. ``paired=False``: arms hold different users, resampled independently
    (an A/B test). ``paired=True``: both arms are measured on the same users (row i = the same user), resampled
    together (off-policy replay of two policies on one log).
    """
    if paired and len(num_c) != len(num_t):
        raise ValueError("paired bootstrap needs the same users in both arms")
    if min(len(num_c), len(num_t)) == 0:
        raise ValueError("uplift needs users in both arms")
    rc, rt = num_c.sum() / den_c.sum(), num_t.sum() / den_t.sum()
    rng = np.random.default_rng(seed)
    ups = []
    block = max(1, 2_000_000 // max(len(num_c), len(num_t)))
    for start in range(0, n_boot, block):
        b = min(block, n_boot - start)
        ic = rng.integers(0, len(num_c), (b, len(num_c)))
        it = ic if paired else rng.integers(0, len(num_t), (b, len(num_t)))
        with np.errstate(divide="ignore", invalid="ignore"):
            ups.append((num_t[it].sum(1) / den_t[it].sum(1)) / (num_c[ic].sum(1) / den_c[ic].sum(1)) - 1)
    u = np.concatenate(ups)
    u = u[np.isfinite(u)]
    if len(u) < n_boot // 2:
        raise ValueError(f"uplift undefined on {n_boot - len(u)} of {n_boot} resamples (too few events)")
    lo, hi = np.quantile(u, [alpha / 2, 1 - alpha / 2])
    return float(rc), float(rt), float(rt / rc - 1), float(lo), float(hi)


def uplift(impressions: pd.DataFrame, metric: str, n_boot: int = 400, alpha: float = 0.05, seed: int = 0) -> Uplift:
    """Relative uplift of ``metric`` (a key of METRICS) with a per-user bootstrap CI."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric '{metric}': expected one of {sorted(METRICS)}")
    num, den = METRICS[metric]
    n, d, treat = _per_user(impressions, num, den)
    rc, rt, up, lo, hi = ratio_uplift_ci(n[~treat], d[~treat], n[treat], d[treat], n_boot, alpha, seed)
    return Uplift(metric, rc, rt, up, lo, hi)


def daily_table(impressions: pd.DataFrame) -> pd.DataFrame:
    """Per (day, arm): impressions, users, clicks, conversions, revenue and the three rates."""
    g = impressions.groupby(["day", "arm"], sort=True)
    out = g.agg(
        impressions=("impression", "sum"),
        users=("user_id", "nunique"),
        clicks=("click", "sum"),
        conversions=("conversion", "sum"),
        revenue=("revenue", "sum"),
    ).reset_index()
    out["ctr"] = out["clicks"] / out["impressions"]
    out["cvr"] = out["conversions"] / out["clicks"].where(out["clicks"] > 0)
    out["revenue_per_impression"] = out["revenue"] / out["impressions"]
    return out


def cumulative_uplift(impressions: pd.DataFrame, n_boot: int = 400, alpha: float = 0.05, seed: int = 0) -> pd.DataFrame:
    """Uplift with CI of each metric over days <= d, for every day d (the CI narrows as the test runs)."""
    rows = []
    for day in sorted(impressions["day"].unique()):
        upto = impressions[impressions["day"] <= day]
        for metric in METRICS:
            try:
                u = uplift(upto, metric, n_boot, alpha, seed)
            except ValueError:  # e.g. no conversion yet in an arm
                continue
            rows.append({"day": int(day), "metric": metric, "control": u.control, "treatment": u.treatment, "uplift": u.uplift, "lo": u.lo, "hi": u.hi})
    return pd.DataFrame(rows)


def analyse(impressions: pd.DataFrame, cfg: ABConfig) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Uplift], dict[str, float]]:
    """Daily table, cumulative uplifts, whole-experiment uplifts and the SRM test of an impression table."""
    users = impressions.groupby("user_id")["arm"].first()
    srm = srm_test(int((users == ARMS[0]).sum()), int((users == ARMS[1]).sum()), cfg.treatment_share)
    summary = {m: uplift(impressions, m, cfg.n_boot, cfg.alpha, cfg.seed) for m in METRICS}
    return daily_table(impressions), cumulative_uplift(impressions, cfg.n_boot, cfg.alpha, cfg.seed), summary, srm


# -- simulation --------------------------------------------------------------------------------------------
def _candidates(world: SyntheticWorld, req: dict[str, np.ndarray], day: int, k: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``k`` candidate items per request, sharing the request's user and context, scored at position 1."""
    n = len(req["user"])
    # candidates come from the request's session: items "from the intent" follow the request's intent
    cand = sample_rows(world, np.repeat(req["user"], k), np.ones(n * k, np.int64), (day, day + 1), rng, np.repeat(req["intent"], k))
    for key in _CONTEXT_KEYS:
        cand[key] = np.repeat(req[key], k)
    cand["position"] = np.ones(n * k, np.int64)
    return cand


def _with_past_features(frame: pd.DataFrame, request: np.ndarray, log: pd.DataFrame) -> pd.DataFrame:
    """Candidate rows with their cross features (against the users' rows in ``log``, all earlier) and item-past
    features (against every row of ``log``).

    Candidates of a request share its ts, and the past sums treat rows tied on ts as not seeing each other. A
    user with two requests in one block must not see the other request's candidates (they were not shown), so
    each request gets its own copy of its user's history, keyed by the request.
    """
    keys = ["user_id", "item_id", "ts", "category", "brand"]
    req_user = pd.DataFrame({"request": request, "user_id": frame["user_id"].to_numpy()}).drop_duplicates("request")
    hist = log[keys + ["click"]].merge(req_user, on="user_id")
    hist = hist.assign(user_id=hist.pop("request"), _row=-1)
    cand = frame[keys].assign(user_id=request, click=np.int8(0), _row=np.arange(len(frame)))
    both = add_cross_features(pd.concat([hist, cand], ignore_index=True))
    both = both[both["_row"] >= 0].sort_values("_row")
    out = frame.copy()
    out[CROSS_NUMERIC] = both[CROSS_NUMERIC].to_numpy(np.float32)
    return add_item_features(out, log)


def _rank(request: np.ndarray, score: np.ndarray) -> np.ndarray:
    """0-based rank of each candidate inside its request by descending score (ties: candidate order)."""
    order = np.lexsort((-score, request))
    req_sorted = request[order]
    first = np.r_[0, np.flatnonzero(req_sorted[1:] != req_sorted[:-1]) + 1]
    starts = np.repeat(first, np.diff(np.r_[first, len(order)]))
    rank = np.empty(len(order), np.int64)
    rank[order] = np.arange(len(order)) - starts
    return rank


def _score(scorer: Scorer, rows: pd.DataFrame, arm: str) -> np.ndarray:
    s = np.asarray(scorer(rows.drop(columns=[c for c in ORACLE_COLUMNS if c in rows.columns])), dtype=np.float64)
    if s.shape != (len(rows),):
        raise ValueError(f"{arm} scorer returned shape {s.shape} for {len(rows)} candidate rows; expected ({len(rows)},)")
    if not np.isfinite(s).all():
        raise ValueError(f"{arm} scorer returned {int((~np.isfinite(s)).sum())} non-finite scores")
    return s


def simulate_ab(
    world: SyntheticWorld,
    history: pd.DataFrame,
    control: Scorer,
    treatment: Scorer,
    cfg: ABConfig = ABConfig(),
    progress: bool = True,
) -> ABResult:
    """Run the experiment on days [start_day, start_day + days) of ``world`` and analyse it.

    ``history``: the pre-experiment log of the same world (e.g. ``generate(...)`` rows with ts before the start),
    with the contract's columns plus category and brand; both arms' logs start from it.
    """
    start_ts = world.start_ts + cfg.start_day * DAY
    missing = [c for c in _LOG_COLUMNS if c not in history.columns]
    if missing:
        raise ValueError(f"history is missing columns {missing}")
    if len(history) and int(history["ts"].max()) >= start_ts:
        raise ValueError(f"history has rows at or after the experiment start (day {cfg.start_day}); cut it there")
    rng = np.random.default_rng([cfg.seed, 17])
    scorers = {ARMS[0]: control, ARMS[1]: treatment}
    logs = {arm: history[_LOG_COLUMNS].reset_index(drop=True) for arm in ARMS}
    arm_of_user = assign_arms(np.arange(world.n_users), cfg.treatment_share, cfg.salt)
    activity = world.n_events / world.n_events.sum()
    next_id = int(history["instance_id"].max()) + 1 if "instance_id" in history.columns and len(history) else 0
    shown_parts: list[pd.DataFrame] = []
    cand_parts: list[pd.DataFrame] = []
    request_base = 0
    bar = tqdm(total=cfg.days * cfg.rounds_per_day, desc="A/B simulation", unit="round", disable=not progress)
    for day in range(cfg.start_day, cfg.start_day + cfg.days):
        joined = activity * (world.join_day <= day)  # users who have not joined yet do not arrive
        users = rng.choice(world.n_users, cfg.requests_per_day, p=joined / joined.sum())
        req = sample_rows(world, users, np.ones(len(users), np.int64), (day, day + 1), rng)
        block = req["hour"] * cfg.rounds_per_day // 24
        for b in range(cfg.rounds_per_day):
            sel = np.flatnonzero(block == b)
            bar.update(1)
            if len(sel) == 0:
                continue
            r = {k: v[sel] for k, v in req.items()}
            cand = _candidates(world, r, day, cfg.candidates, rng)
            request = np.repeat(np.arange(len(sel)) + request_base, cfg.candidates)
            request_base += len(sel)
            feats = feature_frame(world, cand)
            feats.insert(0, "instance_id", np.arange(next_id, next_id + len(feats), dtype=np.int64))
            next_id += len(feats)
            draws = rng.random((2, len(feats)))  # click and conversion draws, fixed before any arm ranks
            for a, arm in enumerate(ARMS):
                rows_idx = np.flatnonzero(arm_of_user[cand["user"]] == a)
                if len(rows_idx) == 0:
                    continue
                rows = _with_past_features(feats.iloc[rows_idx].reset_index(drop=True), request[rows_idx], logs[arm])
                score = _score(scorers[arm], rows, arm)
                rank = _rank(request[rows_idx], score)
                shown = rank < cfg.slots
                idx = rows_idx[shown]
                pos = rank[shown] + 1
                logit = world.click_logit(
                    cand["user"][idx], cand["item"][idx], cand["ts"][idx], cand["hour"][idx], cand["promo"][idx], pos, cand["device"][idx],
                    cand["domain"][idx], cand["intent"][idx],
                )  # fmt: skip
                p_click = 1.0 / (1.0 + np.exp(-logit))
                click = (draws[0, idx] < p_click).astype(np.int8)
                conv = (click == 1) & (draws[1, idx] < feats["p_conversion"].to_numpy()[idx])
                out = rows[shown].reset_index(drop=True).assign(position=pos, click=click)
                out.insert(0, "day", day)
                out.insert(1, "arm", arm)
                out.insert(2, "request_id", request[idx])
                out["conversion"] = conv.astype(np.int8)
                out["revenue"] = np.where(conv, world.item_price[cand["item"][idx]], 0.0)
                out["impression"] = 1
                out["p_click"] = p_click.astype(np.float32)  # the truth at the shown position (analysis only)
                shown_parts.append(out)
                logged = out.assign(conversion=np.nan, conversion_ts=np.nan)  # conversions are never known in the logs
                logs[arm] = pd.concat([logs[arm], logged[_LOG_COLUMNS]], ignore_index=True)
                if hasattr(scorers[arm], "observe"):
                    scorers[arm].observe(out.drop(columns=["p_click", "p_conversion"]))
                if cfg.keep_candidates:
                    kept = rows.assign(day=day, arm=arm, request_id=request[rows_idx], score=score, logged=shown)
                    for col, val in (("click", click), ("conversion", conv), ("revenue", out["revenue"].to_numpy())):
                        kept[col] = np.nan  # outcomes exist only for shown candidates
                        kept.loc[shown, col] = val
                    cand_parts.append(kept)
    bar.close()
    impressions = pd.concat(shown_parts, ignore_index=True)
    daily, cumulative, summary, srm = analyse(impressions, cfg)
    users = impressions.groupby("user_id")["arm"].first()
    return ABResult(
        config=cfg,
        impressions=impressions,
        daily=daily,
        cumulative=cumulative,
        summary=summary,
        srm=srm,
        candidates=pd.concat(cand_parts, ignore_index=True) if cand_parts else None,
        arm_share={arm: float((users == arm).mean()) for arm in ARMS},
    )
