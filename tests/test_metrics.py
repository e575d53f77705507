"""Metrics agree with sklearn / scipy / slow loops, and CIs behave."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import log_loss, roc_auc_score

from iat.metrics import auc, bootstrap_ci, evaluate, gauc, logloss, mean_ci, t_quantile


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 3000))
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    # coarse scores -> many ties; correlated with y so the AUC is far from 0.5
    p = np.round(rng.random(n) * 0.5 + 0.3 * y, int(rng.integers(0, 3)))
    assert auc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_known_values_and_one_class_error() -> None:
    assert auc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0
    assert auc([0, 1], [0.5, 0.5]) == 0.5
    with pytest.raises(ValueError, match="both classes"):
        auc([1, 1, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="0/1"):
        auc([0, 2], [0.1, 0.2])


def _slow_gauc(y: np.ndarray, p: np.ndarray, g: np.ndarray) -> float:
    num = den = 0.0
    for u in np.unique(g):
        m = g == u
        if 0 < y[m].sum() < m.sum():
            num += roc_auc_score(y[m], p[m]) * m.sum()
            den += m.sum()
    return num / den


@pytest.mark.parametrize("seed", range(4))
def test_gauc_matches_slow_loop(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 4000
    g = rng.integers(0, 300, n) * 7 - 50  # non-contiguous, negative ids
    y = rng.integers(0, 2, n)
    p = np.round(rng.random(n) + 0.2 * y + 0.01 * (g % 5), 1)  # ties, group-dependent offsets
    assert gauc(y, p, g) == pytest.approx(_slow_gauc(y, p, g), abs=1e-12)


def test_gauc_ignores_group_offsets_that_auc_sees() -> None:
    # within each user the ranking is perfect; across users user 1's negative outranks user 2's positive
    y = np.array([0, 1, 0, 1])
    p = np.array([0.8, 0.9, 0.1, 0.2])
    u = np.array([1, 1, 2, 2])
    assert gauc(y, p, u) == 1.0
    assert auc(y, p) == 0.75
    with pytest.raises(ValueError, match="both classes"):
        gauc([1, 0], [0.3, 0.2], [1, 2])


def test_logloss_known_values() -> None:
    assert logloss([1, 0], [0.5, 0.5]) == pytest.approx(math.log(2))
    assert logloss([1], [1.0]) == pytest.approx(-math.log(1 - 1e-7), rel=1e-6)
    assert logloss([1], [0.0]) == pytest.approx(-math.log(1e-7))
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 2, 500), rng.random(500)
    assert logloss(y, p) == pytest.approx(log_loss(y, p), rel=1e-9)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        logloss([1], [1.5])


def _noisy(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1 / (1 + np.exp(-(rng.normal(size=n) + y)))
    return y, p, rng.integers(0, max(2, n // 20), n)


def test_bootstrap_ci_covers_estimate_and_shrinks_with_n() -> None:
    widths = []
    for n in (400, 6400):
        y, p, _ = _noisy(n, seed=1)
        lo, hi = bootstrap_ci(auc, y, p, n_boot=200, seed=3)
        assert lo < auc(y, p) < hi
        widths.append(hi - lo)
    # width ~ 1/sqrt(n): 16x the rows -> about a quarter of the width
    assert widths[1] < 0.4 * widths[0]


def test_group_bootstrap_is_wider_for_clustered_data() -> None:
    # 40 users; a per-user effect drives both label rate and score: rows within a user are not independent
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(40), 100)
    effect = rng.normal(size=40)[users] * 2
    y = (rng.random(len(users)) < 1 / (1 + np.exp(-effect))).astype(int)
    p = effect + rng.normal(size=len(users))
    row_lo, row_hi = bootstrap_ci(auc, y, p, seed=1)
    grp_lo, grp_hi = bootstrap_ci(auc, y, p, groups=users, seed=1)
    assert grp_lo < auc(y, p) < grp_hi
    assert (grp_hi - grp_lo) > 2 * (row_hi - row_lo)


def test_evaluate_returns_all_metrics_with_cis() -> None:
    y, p, users = _noisy(3000, seed=2)
    r = evaluate(y, p, users, n_boot=50)
    for name, fn in {"auc": auc, "logloss": logloss}.items():
        assert r[name] == pytest.approx(fn(y, p))
        assert r[f"{name}_lo"] < r[name] < r[f"{name}_hi"]
    assert r["gauc"] == pytest.approx(gauc(y, p, users))
    assert r["gauc_lo"] < r["gauc"] < r["gauc_hi"]
    assert r["n"] == 3000 and r["n_users"] == len(np.unique(users))


@pytest.mark.parametrize("df", [1, 2, 3, 4, 7, 30, 120])
def test_t_quantile_matches_scipy(df: int) -> None:
    for q in (0.9, 0.975, 0.995, 0.025):
        assert t_quantile(q, df) == pytest.approx(stats.t.ppf(q, df), abs=1e-8)


def test_mean_ci_is_the_t_interval() -> None:
    v = [0.71, 0.73, 0.72]
    m, lo, hi = mean_ci(v)
    ref = stats.t.interval(0.95, 2, loc=np.mean(v), scale=stats.sem(v))
    assert m == pytest.approx(0.72)
    assert (lo, hi) == pytest.approx(ref, abs=1e-9)
    m1, lo1, hi1 = mean_ci([0.5])
    assert m1 == 0.5 and math.isnan(lo1) and math.isnan(hi1)
    with pytest.raises(ValueError, match="at least one"):
        mean_ci([])
