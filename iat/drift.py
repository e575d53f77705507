"""Drift measures that need no monitoring library, and the verdict a pipeline acts on.

- ``domain_classifier_auc``: an embedding-level drift score for dense tokens. A logistic regression on
  [x, x^2] (standardised by the reference) learns to tell the two windows apart; its AUC on held-out rows is
  0.5 when they are indistinguishable and grows with any shift of means or spreads along any direction.
- ``code_usage_drift``: for HGAQ codes, the Jensen-Shannon distance between the code histograms of the two
  windows beyond what sampling noise gives, per (sub-token, level), summarised per level.
- ``decide``: turns the measured numbers (``DriftMeasures``) into a ``DriftVerdict`` (drifted?, which action, why).

Any log drifts week on week on its own: lifetime counts grow, item ages and strict-past rates move, the active
users change. A fixed threshold then either fires on every week or misses real shifts. ``decide`` therefore judges
the current window against a **control pair** measured the same way: an earlier window of the log against the
reference, as far before it as the current window is after it. A measure flags only where the current window
drifts clearly more than the control (``DriftConfig.column_margin``, ``embedding_margin``, ...); without a control
the absolute thresholds apply.

Per-dimension and raw-feature drift are computed by Evidently (``monitoring/``); their numbers enter ``decide``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from iat.metrics import auc

ACTIONS: tuple[str, ...] = ("none", "rematerialize", "retrain_source")


@dataclass(frozen=True)
class DriftConfig:
    """Thresholds and sampling of the drift checks (a config section, not constants)."""

    sample_cap: int = 20_000  # rows per window any drift measure sees (uniform sample; keeps 1M tokens fast)
    column_method: str = "wasserstein"  # Evidently stat test per numeric column (normed Wasserstein distance)
    column_threshold: float = 0.1  # a column drifts when its stat passes this (the method's scale)
    dim_share: float = 0.5  # dense tokens drift when this share of dimensions drift (Evidently's dataset rule) ...
    embedding_auc: float = 0.6  # ... or when a classifier tells the windows apart this well
    code_threshold: float = 0.1  # a (sub-token, level) drifts when its bias-corrected JS distance passes this
    code_level_share: float = 0.25  # codes drift when this share of one level's sub-tokens drift
    feature_share: float = 0.25  # raw inputs drift when this share of one group's feature columns drift ...
    # ... with its own share for a group: cross features are lifetime counts, they grow week on week in any log
    group_share: dict[str, float] = field(default_factory=lambda: {"cross": 0.5})
    unseen_share: float = 0.3  # ... or this share of current rows carry an id the reference never saw ...
    unseen_groups: tuple[str, ...] = ("item",)  # ... in these groups (new users arrive in any healthy log) ...
    prediction_threshold: float = 0.1  # ... or the model's predictions drift this much (normed Wasserstein)
    # Against a control pair (the log's own drift over the same lag): a column / token dimension moved when its
    # statistic passes column_threshold and the control's by column_margin (by group_margin for a group's columns:
    # lifetime counts move with whichever users were active that week), and the token dimensions the same way (the
    # share of them that moved then meets dim_share); the classifier AUC must pass the control's by
    # embedding_margin; code-level and unseen-id shares and prediction drift must pass the control's by their
    # absolute thresholds above. Margins measured in bench/bench_drift_shifts.py (docs/RESULTS.md).
    column_margin: float = 0.2
    group_margin: dict[str, float] = field(default_factory=lambda: {"cross": 0.5})
    embedding_margin: float = 0.02
    auc_drop: float = 0.015  # the model's AUC on the current window falls this much below the reference's (labels known by then)
    rolling_days: int = 7  # a dashboard point covers the week up to its day (a lone day differs by its weekday)
    max_categories: int = 200  # categoricals with more reference values are id-like: unseen share, not a distribution test
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rolling_days < 1:
            raise ValueError(f"DriftConfig.rolling_days must be >= 1, got {self.rolling_days}")
        if self.sample_cap < 100:
            raise ValueError(f"DriftConfig.sample_cap must be >= 100, got {self.sample_cap}")
        for name in ("dim_share", "code_level_share", "feature_share"):
            v = getattr(self, name)
            if not 0 < v <= 1:
                raise ValueError(f"DriftConfig.{name} must lie in (0, 1], got {v}")
        if not 0.5 < self.embedding_auc <= 1:
            raise ValueError(f"DriftConfig.embedding_auc must lie in (0.5, 1], got {self.embedding_auc}")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "DriftConfig":
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"drift config: unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        if "unseen_groups" in d:
            d["unseen_groups"] = tuple(d["unseen_groups"])
        return cls(**d)


@dataclass
class DriftMeasures:
    """The numbers one pair of windows gave; a measure left as None was not taken and does not vote.

    Per-column statistics (``dim_stats`` per token dimension, ``column_stats`` per raw feature) come from the
    detailed report and let ``decide`` compare column by column with a control pair; without them the shares
    Evidently counted (``dim_drift_share``, ``feature_group_share``) are used as they are."""

    dim_drift_share: float | None = None  # share of token dimensions that drifted (dense tokens)
    dim_stats: dict[str, float] | None = None  # token dimension -> drift statistic
    embedding_score: float | None = None  # domain-classifier AUC (dense tokens)
    code_level_share: dict[int, float] | None = None  # level -> share of sub-tokens whose code usage drifted
    feature_drift_share: float | None = None  # over all feature columns (reported; groups vote)
    feature_group_share: dict[str, float] | None = None  # group -> share of its columns that drifted
    column_stats: dict[str, float] | None = None  # feature column -> drift statistic
    unseen_value_share: dict[str, float] | None = None  # id-like column of an unseen_groups group -> share of rows with an unseen id
    prediction_drift: float | None = None
    auc_change: float | None = None  # the model's AUC on the current window minus that on the reference


@dataclass
class DriftVerdict:
    """What the drift checks found and what to do about it.

    ``action``: ``retrain_source`` when the inputs moved or the model's AUC fell (the world changed: retrain the
    source model on recent data, then re-materialise the tokens), also when only the tokens moved while the input columns were measured
    (tokens are a function of the inputs: the inputs moved together, e.g. which categories users click, in a way
    no single column shows); ``rematerialize`` when the tokens moved and no input was measured: check the store's
    source version (tokens written by another encoder version, a feature bug on the ingest path) and re-encode;
    ``none`` otherwise. ``moved_columns`` names the feature columns that moved beyond the control.
    """

    drifted: bool
    token_drift: bool
    input_drift: bool
    action: str
    reasons: list[str] = field(default_factory=list)
    dim_drift_share: float | None = None
    embedding_score: float | None = None
    code_level_share: dict[int, float] | None = None
    feature_drift_share: float | None = None
    feature_group_share: dict[str, float] | None = None
    unseen_value_share: dict[str, float] | None = None
    prediction_drift: float | None = None
    auc_change: float | None = None
    moved_columns: list[str] = field(default_factory=list)
    control: DriftMeasures | None = None  # the control pair's numbers, when one was measured

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_rows(n: int, cap: int, seed: int) -> np.ndarray:
    """Sorted row indices of a uniform sample of at most ``cap`` of ``n`` rows (all rows when n <= cap)."""
    if n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))


def unseen_share(reference: Any, current: Any) -> float:
    """Share of ``current`` values that never occur in ``reference`` (e.g. item ids of a new catalogue)."""
    cur = np.asarray(current)
    if len(cur) == 0:
        raise ValueError("unseen_share: the current window is empty")
    return float((~np.isin(cur, np.unique(np.asarray(reference)))).mean())


def _check_2d(name: str, x: Any) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a [N, D] array, got shape {a.shape}")
    if len(a) < 10:
        raise ValueError(f"{name}: needs at least 10 rows, got {len(a)}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name}: {int((~np.isfinite(a)).sum())} non-finite values")
    return a


def _fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, iters: int = 30) -> np.ndarray:
    """Class-balanced L2 logistic regression by Newton steps (the Hessian is only (2D+1)^2)."""
    w_cls = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean()))
    beta = np.zeros(x.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        grad = x.T @ (w_cls * (p - y)) + l2 * beta
        hess = (x * (w_cls * p * (1 - p))[:, None]).T @ x + l2 * np.eye(len(beta))
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-6:
            break
    return beta


def domain_classifier_auc(reference: Any, current: Any, seed: int = 0, l2: float = 1.0) -> float:
    """Held-out AUC of a classifier that tells ``current`` rows from ``reference`` rows (0.5 = no drift).

    Half of each window trains the classifier, the other half scores it, so the AUC is not inflated by fitting;
    then the halves swap and the two held-out AUCs are averaged (every row is scored once: half the variance of
    one split, which matters when the verdict compares this AUC with a control pair's).
    Features: each dimension standardised by the reference, and its square (shifts of spread, not only mean).
    """
    ref, cur = _check_2d("reference", reference), _check_2d("current", current)
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} dimensions, current has {cur.shape[1]}")
    mu, sd = ref.mean(axis=0), ref.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    z = (np.vstack([ref, cur]) - mu) / sd
    z = np.clip(z, -8, 8)  # one extreme value must not dominate a Newton step
    x = np.hstack([z, z * z - 1.0, np.ones((len(z), 1))])
    y = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    rng = np.random.default_rng(seed)
    train = np.zeros(len(y), dtype=bool)
    for cls in (0, 1):  # a stratified half
        idx = np.flatnonzero(y == cls)
        train[rng.choice(idx, len(idx) // 2, replace=False)] = True
    folds = []
    for fit_on in (train, ~train):
        beta = _fit_logistic(x[fit_on], y[fit_on], l2)
        folds.append(auc(y[~fit_on].astype(np.int8), x[~fit_on] @ beta))
    return float(np.mean(folds))


def code_histograms(codes: Any, n_codes: int = 256) -> np.ndarray:
    """Counts [T, M, V] of each code value per (sub-token, level) of codes [N, T, M]."""
    c = np.asarray(codes)
    if c.ndim != 3:
        raise ValueError(f"codes: expected [N, T, M] (sub-tokens x levels), got shape {c.shape}")
    if c.dtype.kind not in "iu":
        raise ValueError(f"codes: expected integers, got dtype {c.dtype}")
    if c.size and (c.min() < 0 or c.max() >= n_codes):
        raise ValueError(f"codes: values must lie in 0..{n_codes - 1}, got {c.min()}..{c.max()}")
    _, T, M = c.shape
    flat = (np.arange(T * M).reshape(1, T, M) * n_codes + c.astype(np.int64)).ravel()
    return np.bincount(flat, minlength=T * M * n_codes).reshape(T, M, n_codes)


def _weights_and_mi(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Window weights' entropy H(w) and the weighted JS divergence (= mutual information of window and code), nats."""
    na, nb = a.sum(-1, keepdims=True), b.sum(-1, keepdims=True)
    if (na == 0).any() or (nb == 0).any():
        raise ValueError("js_distance: an empty histogram has no distribution")
    wa, wb = na / (na + nb), nb / (na + nb)
    p, q = a / na, b / nb
    m = wa * p + wb * q

    def kl(x: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(x > 0, x * np.log(x / m), 0.0).sum(-1)

    h = -(wa * np.log(wa) + wb * np.log(wb))[..., 0]
    return h, wa[..., 0] * kl(p) + wb[..., 0] * kl(q)


def js_distance(ref_counts: Any, cur_counts: Any, null_mi: Any = 0.0) -> np.ndarray:
    """Jensen-Shannon distance (base 2 for equal windows; in [0, 1]) between count histograms on the last axis.

    ``null_mi``: the divergence expected from sampling noise alone (nats), subtracted before the square root.
    The divergence is rescaled by its maximum H(window weights), so total separation is 1 for any window sizes.
    """
    a, b = np.asarray(ref_counts, np.float64), np.asarray(cur_counts, np.float64)
    if a.shape != b.shape:
        raise ValueError(f"histograms differ in shape: {a.shape} vs {b.shape}")
    h, mi = _weights_and_mi(a, b)
    return np.sqrt(np.clip((mi - null_mi) / h, 0.0, 1.0))


@dataclass
class CodeDrift:
    distance: np.ndarray  # [T, M] bias-corrected JS distance per (sub-token, level)
    level_mean: np.ndarray  # [M]
    level_share: np.ndarray  # [M] share of sub-tokens above the threshold


def code_usage_drift(
    reference: Any, current: Any, threshold: float = 0.1, n_codes: int = 256, permutations: int = 4, seed: int = 0
) -> CodeDrift:
    """Code-usage drift of HGAQ codes [N, T, M] between two windows, per (sub-token, level) and per level.

    With 256 codes a window of a few thousand rows has sparse histograms, and two samples of the same
    distribution already differ. The noise level is measured, not assumed: the rows of both windows are pooled
    and re-split at random ``permutations`` times, and the mean divergence of those splits is subtracted.
    """
    ref, cur = np.asarray(reference), np.asarray(current)
    hr, hc = code_histograms(ref, n_codes), code_histograms(cur, n_codes)
    if hr.shape != hc.shape:
        raise ValueError(f"reference codes are {hr.shape[:2]} (T, M), current {hc.shape[:2]}")
    pooled = np.concatenate([ref, cur])
    rng = np.random.default_rng(seed)
    null = np.zeros(hr.shape[:2])
    for _ in range(permutations):
        perm = rng.permutation(len(pooled))
        a = code_histograms(pooled[perm[: len(ref)]], n_codes)
        null += _weights_and_mi(a.astype(np.float64), (hr + hc - a).astype(np.float64))[1] / permutations
    d = js_distance(hr, hc, null)
    return CodeDrift(distance=d, level_mean=d.mean(axis=0), level_share=(d > threshold).mean(axis=0))


def _moved(stats: dict[str, float], control: dict[str, float], threshold: float, margin: Any) -> list[str]:
    """Columns whose statistic passes ``threshold`` and the control's by ``margin(column)``."""
    return [c for c, v in stats.items() if v >= threshold and v - control.get(c, 0.0) >= margin(c)]


def decide(cfg: DriftConfig, current: DriftMeasures, control: DriftMeasures | None = None, groups: dict[str, str] | None = None) -> DriftVerdict:
    """The verdict on ``current``, judged against ``control`` (the log's own drift over the same lag) when given.

    ``groups``: feature column -> its schema group (per-group margins and shares of moved columns)."""
    cur, ctl = current, control or DriftMeasures()
    groups = groups or {}
    against = " (control pair: {:{f}})"
    reasons: list[str] = []
    token = False

    dim_share = cur.dim_drift_share
    if cur.dim_stats and ctl.dim_stats:
        dim_share = len(_moved(cur.dim_stats, ctl.dim_stats, cfg.column_threshold, lambda _: cfg.column_margin)) / len(cur.dim_stats)
    if dim_share is not None and dim_share >= cfg.dim_share:
        token = True
        beyond = " beyond the control pair" if cur.dim_stats and ctl.dim_stats else ""
        reasons.append(f"{dim_share:.0%} of token dimensions drifted{beyond} (threshold {cfg.dim_share:.0%})")
    if cur.embedding_score is not None:
        if ctl.embedding_score is not None:
            if cur.embedding_score - ctl.embedding_score >= cfg.embedding_margin:
                token = True
                reasons.append(
                    f"a classifier tells the token windows apart with AUC {cur.embedding_score:.3f}, "
                    f"{cur.embedding_score - ctl.embedding_score:+.3f} over the control pair's {ctl.embedding_score:.3f} (margin {cfg.embedding_margin})"
                )
        elif cur.embedding_score >= cfg.embedding_auc:
            token = True
            reasons.append(f"a classifier tells the token windows apart with AUC {cur.embedding_score:.3f} (threshold {cfg.embedding_auc})")
    for level, share in sorted((cur.code_level_share or {}).items()):
        base = (ctl.code_level_share or {}).get(level, 0.0)
        if share - base >= cfg.code_level_share:
            token = True
            reasons.append(f"code usage drifted in {share:.0%} of level-{level} sub-tokens" + (against.format(base, f=".0%") if control else "") + f" (threshold {cfg.code_level_share:.0%})")

    inputs = False
    moved: list[str] = []
    group_share = cur.feature_group_share
    if cur.column_stats and ctl.column_stats:
        margin = lambda c: cfg.group_margin.get(groups.get(c, ""), cfg.column_margin)  # noqa: E731
        moved = _moved(cur.column_stats, ctl.column_stats, cfg.column_threshold, margin)
        for c in moved:
            inputs = True
            reasons.append(f"feature {c} drifted by {cur.column_stats[c]:.3f}" + against.format(ctl.column_stats.get(c, 0.0), f=".3f") + f" (margin {margin(c)})")
        by_group: dict[str, list[str]] = {}
        for c in cur.column_stats:
            by_group.setdefault(groups.get(c, "other"), []).append(c)
        group_share = {g: sum(c in moved for c in cols) / len(cols) for g, cols in by_group.items()}
    else:
        for group, share in sorted((group_share or {}).items()):
            limit = cfg.group_share.get(group, cfg.feature_share)
            if share >= limit:
                inputs = True
                reasons.append(f"{share:.0%} of the {group} features drifted (threshold {limit:.0%})")
    for column, share in sorted((cur.unseen_value_share or {}).items()):
        base = (ctl.unseen_value_share or {}).get(column, 0.0)
        if share - base >= cfg.unseen_share:
            inputs = True
            reasons.append(f"{share:.0%} of current rows have {column} values the reference never saw" + (against.format(base, f=".0%") if control else "") + f" (threshold {cfg.unseen_share:.0%})")
    pred = cur.prediction_drift
    if pred is not None and not math.isnan(pred):
        base = ctl.prediction_drift if ctl.prediction_drift is not None and not math.isnan(ctl.prediction_drift) else 0.0
        if pred - base >= cfg.prediction_threshold:
            inputs = True
            reasons.append(f"predictions drifted by {pred:.3f}" + (against.format(base, f=".3f") if control else "") + f" (threshold {cfg.prediction_threshold})")

    # Judged alone: the control's AUC change is itself the difference of two noisy AUCs, and subtracting it
    # doubled the noise (3 false alarms in 9 unshifted seeds with it, none without; bench_drift_shifts.py).
    if cur.auc_change is not None and -cur.auc_change >= cfg.auc_drop:
        inputs = True
        reasons.append(f"the model's AUC changed by {cur.auc_change:+.4f} on the current window (drop threshold {cfg.auc_drop})")
    measured_inputs = bool(cur.column_stats or cur.feature_group_share or cur.unseen_value_share) or pred is not None
    if inputs:
        action = "retrain_source"
    elif token and measured_inputs:
        action = "retrain_source"
        reasons.append("the tokens moved while no single input column did: the inputs moved together (tokens are a function of them)")
    elif token:
        action = "rematerialize"
        reasons.append("the tokens moved and no input was measured: check the store's source version, then re-encode")
    else:
        action = "none"
    if control is None and (token or inputs):
        reasons.append("no control window in the store: absolute thresholds (a log's own week-on-week drift may pass them)")
    return DriftVerdict(
        drifted=token or inputs,
        token_drift=token,
        input_drift=inputs,
        action=action,
        reasons=reasons,
        dim_drift_share=dim_share,
        embedding_score=cur.embedding_score,
        code_level_share=cur.code_level_share,
        feature_drift_share=cur.feature_drift_share,
        feature_group_share=group_share,
        unseen_value_share=cur.unseen_value_share,
        prediction_drift=pred,
        auc_change=cur.auc_change,
        moved_columns=moved,
        control=control,
    )
