"""Drift measures on arrays, the verdict, the Evidently token-drift report, and an injected shift seen through a
real (tiny) temporal source model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from iat.data.synthetic import generate
from iat.data.synthetic_world import Shift
from iat.drift import DriftConfig, code_usage_drift, decide, domain_classifier_auc, js_distance, sample_rows, unseen_share
from monitoring.demo import day_window, train_tiny_source
from monitoring.drift import drift_report, token_drift_snapshot, verdict


# -- core measures ----------------------------------------------------------------------------------------
def test_domain_classifier_auc_is_half_without_drift_and_grows_with_shift() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(4000, 16))
    same = domain_classifier_auc(ref, rng.normal(size=(4000, 16)))
    mean_shift = domain_classifier_auc(ref, rng.normal(size=(4000, 16)) + np.r_[0.3, np.zeros(15)])
    spread = domain_classifier_auc(ref, rng.normal(size=(4000, 16)) * np.r_[1.5, np.ones(15)])  # same mean, wider
    assert abs(same - 0.5) < 0.03
    assert mean_shift > 0.55
    assert spread > 0.55  # the squared features see a change of spread that a linear classifier would miss


def test_domain_classifier_auc_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="dimensions"):
        domain_classifier_auc(np.zeros((20, 3)), np.zeros((20, 4)))
    with pytest.raises(ValueError, match="non-finite"):
        domain_classifier_auc(np.full((20, 3), np.nan), np.zeros((20, 3)))


def test_js_distance_bounds() -> None:
    a = np.array([[10, 0, 0, 0]])
    assert js_distance(a, a)[0] == 0.0
    assert js_distance(a, np.array([[0, 0, 0, 10]]))[0] == pytest.approx(1.0)  # disjoint supports
    # equal windows: the base-2 Jensen-Shannon distance scipy computes
    assert js_distance(np.array([[5, 3, 2]]), np.array([[1, 1, 8]]))[0] == pytest.approx(jensenshannon([0.5, 0.3, 0.2], [0.1, 0.1, 0.8], base=2))


def test_code_usage_drift_removes_sampling_noise_and_finds_a_collapsed_level() -> None:
    rng = np.random.default_rng(1)
    n, T, M = 3000, 6, 3
    ref, cur = rng.integers(0, 256, (n, T, M)), rng.integers(0, 256, (n, T, M))
    raw = js_distance(*(np.bincount(x[:, 0, 0], minlength=256)[None] for x in (ref, cur)))[0]
    d = code_usage_drift(ref, cur)
    assert raw > 0.15  # 3,000 draws over 256 codes: two samples of one distribution already differ
    assert d.distance.max() < 0.1 and (d.level_share == 0).all()
    cur[:, :, 1] = cur[:, :, 1] % 64  # level 1 uses only a quarter of its codebook
    d = code_usage_drift(ref, cur)
    assert d.level_share.tolist() == [0.0, 1.0, 0.0]
    assert d.level_mean[1] > 0.4


def test_sample_rows_caps_and_keeps_order() -> None:
    assert sample_rows(50, 100, 0).tolist() == list(range(50))
    s = sample_rows(10_000, 500, 0)
    assert len(s) == 500 and len(np.unique(s)) == 500 and (np.diff(s) > 0).all()


def test_decide_actions() -> None:
    cfg = DriftConfig()
    assert decide(cfg, dim_drift_share=0.0, embedding_score=0.51).action == "none"
    v = decide(cfg, dim_drift_share=0.6, embedding_score=0.51, feature_group_share={"item": 0.0})
    assert (v.drifted, v.token_drift, v.action) == (True, True, "rematerialize")
    v = decide(cfg, embedding_score=0.9, feature_group_share={"item": 0.5, "context": 0.0})
    assert v.action == "retrain_source" and any("item features" in r for r in v.reasons)
    # cross features are lifetime counts that grow in any log: they vote with a higher threshold
    assert decide(cfg, feature_group_share={"cross": 0.4}).action == "none"
    assert decide(cfg, feature_group_share={"cross": 0.6}).action == "retrain_source"
    assert decide(DriftConfig(group_share={"cross": 1.01}), feature_group_share={"cross": 1.0}).action == "none"  # muted
    assert decide(cfg, unseen_value_share={"item_id": 0.95}).action == "retrain_source"
    assert decide(cfg, code_level_share={0: 0.0, 1: 0.5}).action == "rematerialize"
    assert decide(cfg, prediction_drift=0.3).action == "retrain_source"


def test_unseen_share() -> None:
    assert unseen_share([1, 2, 3], [1, 2, 4, 5]) == 0.5
    assert unseen_share(np.arange(10), np.arange(10)) == 0.0


def test_config_rejects_unknown_and_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown keys"):
        DriftConfig.from_dict({"dim_shares": 0.2})
    with pytest.raises(ValueError, match="embedding_auc"):
        DriftConfig(embedding_auc=0.4)


# -- Evidently reports on arrays ----------------------------------------------------------------------------
def test_token_report_flags_shifted_dims_and_reads_back_the_numbers() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(2000, 8))
    cur = rng.normal(size=(2000, 8))
    cur[:, :4] += 0.5  # half the dimensions move
    snap = token_drift_snapshot(ref, cur)
    v = verdict(snap, None)
    assert v.dim_drift_share == 0.5 and v.token_drift and v.action == "rematerialize"
    assert v.embedding_score > 0.6
    values = {m["config"]["column"]: m["value"] for m in snap.dict()["metrics"] if m["config"]["type"].endswith("ValueDrift")}
    assert set(values) == {f"tok_{i}" for i in range(8)}
    assert min(values[f"tok_{i}"] for i in range(4)) > 0.1 > max(values[f"tok_{i}"] for i in range(4, 8))
    assert not verdict(token_drift_snapshot(ref, rng.normal(size=(2000, 8))), None).drifted


def test_code_report_per_level() -> None:
    rng = np.random.default_rng(3)
    ref, cur = rng.integers(0, 256, (3000, 4, 2)), rng.integers(0, 256, (3000, 4, 2))
    cur[:, :, 0] = cur[:, :, 0] // 4  # level 0 collapses onto 64 codes
    v = verdict(token_drift_snapshot(ref, cur), None)
    assert v.code_level_share == {0: 1.0, 1: 0.0} and v.action == "rematerialize"


def test_report_rejects_mismatched_windows() -> None:
    with pytest.raises(ValueError, match="per row"):
        token_drift_snapshot(np.zeros((20, 4)), np.zeros((20, 5)))
    with pytest.raises(ValueError, match="dense"):
        token_drift_snapshot(np.zeros(20), np.zeros(20))


# -- an injected shift, through a real source model ---------------------------------------------------------
# Shift on day 60. 800 users: a window's rows are clustered by user (sessions, heavy-tailed activity), so with
# few users the row-level tests flag user-feature drift between two samples of one period.
USERS, SEED, DAYS, SHIFT_AT = 800, 5, 90, 60


@pytest.fixture(scope="module")
def source_and_logs():
    """A tiny temporal source model trained on the pre-shift log (days 25..52; valid 53..59)."""
    base, schema = generate(USERS, seed=SEED, days=DAYS, progress=False)
    shifted, _ = generate(USERS, seed=SEED, days=DAYS, progress=False, shift=Shift(at=SHIFT_AT / DAYS, kind="catalogue"))
    src = train_tiny_source(day_window(base, 25, 53), day_window(base, 53, 60), schema)
    return src, schema, base, shifted


def test_injected_shift_is_flagged_and_a_same_size_unshifted_window_is_not(source_and_logs) -> None:
    src, schema, base, shifted = source_and_logs
    # Two weeks after the shift, split by day: the reference is the even days of the unshifted log, the current
    # windows its odd days and the odd days of the shifted log. The world's traits drift and its users keep
    # joining, so a *later* week differs from an earlier one for real (prior counts grow); interleaved days of one
    # period hold the same users and differ by sampling only.
    def days(log, parity):
        d = day_window(log, 60, 74)
        return d[((d["ts"] - d["ts"].min()) // 86_400) % 2 == parity]

    ref, cur_same, cur_shift = days(base, 0), days(base, 1), days(shifted, 1)
    # comparable windows (the shifted log redraws the rows after the shift, so their number differs by sampling)
    assert min(len(ref), len(cur_same), len(cur_shift)) > 800

    # detail=False: the verdict needs the summaries, not the per-column widgets (the array tests cover those)
    same = drift_report(src.tokens(ref), src.tokens(cur_same), DriftConfig(), ref, cur_same, schema, detail=False)
    shift = drift_report(src.tokens(ref), src.tokens(cur_shift), DriftConfig(), ref, cur_shift, schema, detail=False)

    assert not same.verdict.drifted, same.verdict.reasons
    assert same.verdict.embedding_score < 0.58 and same.verdict.dim_drift_share < 0.5
    assert shift.verdict.token_drift and shift.verdict.drifted
    assert shift.verdict.embedding_score > 0.9  # new items, new prices: the tokens of the new catalogue stand apart
    assert shift.verdict.action == "retrain_source"  # the raw features moved too: the source model must learn them
    assert shift.verdict.unseen_value_share["item_id"] > 0.9 > 0.1 > same.verdict.unseen_value_share["item_id"]
    assert shift.verdict.feature_group_share["item"] >= 0.25 > same.verdict.feature_group_share["item"]
