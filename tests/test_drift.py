"""Drift measures on arrays, the verdict, the Evidently token-drift report, and an injected shift seen through a
real (tiny) temporal source model."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.distance import jensenshannon

from iat.data.synthetic import generate
from iat.data.synthetic_world import Shift
from iat.drift import DriftConfig, DriftMeasures, code_usage_drift, decide, domain_classifier_auc, js_distance, sample_rows, unseen_share
from monitoring.demo import day_window, train_tiny_source
from monitoring.drift import Window, drift_report, token_drift_snapshot, verdict
from monitoring.run import control_days


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
    cfg, M = DriftConfig(), DriftMeasures
    assert decide(cfg, M(dim_drift_share=0.0, embedding_score=0.51)).action == "none"
    # tokens moved and no input was measured: check the store's source, re-encode
    v = decide(cfg, M(dim_drift_share=0.6, embedding_score=0.51))
    assert (v.drifted, v.token_drift, v.action) == (True, True, "rematerialize")
    # tokens moved while the input columns were measured and none moved: the inputs moved together
    v = decide(cfg, M(dim_drift_share=0.6, embedding_score=0.51, feature_group_share={"item": 0.0}))
    assert (v.token_drift, v.input_drift, v.action) == (True, False, "retrain_source") and any("together" in r for r in v.reasons)
    v = decide(cfg, M(embedding_score=0.9, feature_group_share={"item": 0.5, "context": 0.0}))
    assert v.action == "retrain_source" and any("item features" in r for r in v.reasons)
    # cross features are lifetime counts that grow in any log: they vote with a higher threshold
    assert decide(cfg, M(feature_group_share={"cross": 0.4})).action == "none"
    assert decide(cfg, M(feature_group_share={"cross": 0.6})).action == "retrain_source"
    assert decide(DriftConfig(group_share={"cross": 1.01}), M(feature_group_share={"cross": 1.0})).action == "none"  # muted
    assert decide(cfg, M(unseen_value_share={"item_id": 0.95})).action == "retrain_source"
    assert decide(cfg, M(code_level_share={0: 0.0, 1: 0.5})).action == "rematerialize"
    assert decide(cfg, M(prediction_drift=0.3)).action == "retrain_source"


def test_decide_judges_each_measure_against_the_control_pair() -> None:
    """A log's own week-on-week drift passes the absolute thresholds; against the control it does not vote."""
    cfg, M = DriftConfig(), DriftMeasures
    groups = {"item_prior_count": "item", "promo": "context", "u_prior_count": "cross"}
    control = M(embedding_score=0.61, column_stats={"item_prior_count": 0.62, "promo": 0.01, "u_prior_count": 0.10},
                unseen_value_share={"item_id": 0.05}, prediction_drift=0.05, dim_stats={"tok_0": 0.3, "tok_1": 0.3})
    quiet = M(embedding_score=0.62, column_stats={"item_prior_count": 0.70, "promo": 0.02, "u_prior_count": 0.40},
              unseen_value_share={"item_id": 0.06}, prediction_drift=0.12, dim_stats={"tok_0": 0.35, "tok_1": 0.31})
    alone = decide(cfg, quiet, None, groups)  # absolute thresholds: every one of these fires
    assert alone.action == "retrain_source" and alone.embedding_score >= cfg.embedding_auc and "no control window" in alone.reasons[-1]
    v = decide(cfg, quiet, control, groups)
    assert (v.action, v.moved_columns, v.dim_drift_share) == ("none", [], 0.0), v.reasons
    # a context shift: promo moves far beyond its control, and the tokens with it
    shifted = M(embedding_score=0.66, column_stats={**quiet.column_stats, "promo": 0.31}, unseen_value_share={"item_id": 0.06},
                prediction_drift=0.12, dim_stats={"tok_0": 0.9, "tok_1": 0.31})
    v = decide(cfg, shifted, control, groups)
    assert v.action == "retrain_source" and v.moved_columns == ["promo"] and v.token_drift and v.dim_drift_share == 0.5
    assert v.feature_group_share == {"item": 0.0, "context": 1.0, "cross": 0.0}
    assert any("promo drifted by 0.310 (control pair: 0.010)" in r for r in v.reasons)
    # lifetime counts (cross) need the larger margin of their group
    assert decide(cfg, M(column_stats={"u_prior_count": 0.55}), control, groups).moved_columns == []
    assert decide(cfg, M(column_stats={"u_prior_count": 0.65}), control, groups).moved_columns == ["u_prior_count"]
    # the rest: unseen ids and predictions beyond the control by their thresholds
    assert decide(cfg, M(unseen_value_share={"item_id": 0.30}), control, groups).action == "none"
    assert decide(cfg, M(unseen_value_share={"item_id": 0.40}), control, groups).action == "retrain_source"
    assert decide(cfg, M(prediction_drift=0.2), control, groups).action == "retrain_source"
    # the model's AUC falling (users' interests move no input column), judged alone: the control's own change
    # would add its noise
    c = M(auc_change=+0.010)
    assert decide(cfg, M(auc_change=-0.010), c).action == "none"
    v = decide(cfg, M(auc_change=-0.016), c)
    assert v.action == "retrain_source" and "AUC changed by -0.0160" in v.reasons[0]
    assert decide(cfg, M(auc_change=+0.05), c).action == "none"  # easier to predict is no reason to retrain


def test_control_window_has_the_lag_of_the_current_window() -> None:
    assert control_days((53, 60), (60, 67)) == (46, 53)
    assert control_days((32, 39), (45, 74)) == (0, 26)  # cut at day 0
    assert control_days((3, 10), (10, 17)) is None  # less than a week before the reference


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


# -- every shift kind over seeds, judged against the control pair ------------------------------------------
@pytest.mark.parametrize("seed", [1, pytest.param(5, marks=pytest.mark.slow)])  # 75 s each: one in CI
def test_verdict_is_quiet_on_an_unshifted_week_and_fires_on_every_shift_kind(seed: int) -> None:
    """The setting of bench/bench_drift_shifts.py (1,500 users: at 400 a week's active users alone move the
    user-side counts): reference days 53..59, control 46..52, current 60..66 of the unshifted log and of the log
    shifted on day 60. Without the control an unshifted week of world v2 read ``retrain_source`` in 3/3 seeds."""
    base, schema = generate(1500, seed=seed, days=DAYS, progress=False)
    src = train_tiny_source(day_window(base, 25, 53), day_window(base, 53, 60), schema, seed=seed)

    def window(df):
        return Window(src.tokens(df), df.assign(prediction=src.predict(df)))

    ref, ctl = window(day_window(base, 53, 60)), window(day_window(base, 46, 53))
    actions, moved = {}, {}
    for kind in ("none", "interest", "catalogue", "context"):
        log = base if kind == "none" else generate(1500, seed=seed, days=DAYS, progress=False, shift=Shift(at=SHIFT_AT / DAYS, kind=kind))[0]
        cur = window(day_window(log, 60, 67))
        v = drift_report(ref.tokens, cur.tokens, DriftConfig(), ref.rows, cur.rows, schema, control=ctl).verdict
        actions[kind], moved[kind] = v.action, v.moved_columns
        if kind == "none":
            assert not v.drifted, v.reasons
            # the same week judged by the absolute thresholds alone: the false alarm the control pair removes
            alone = drift_report(ref.tokens, cur.tokens, DriftConfig(), ref.rows, cur.rows, schema, detail=False).verdict
            assert alone.action == "retrain_source", alone.reasons
    assert actions == {"none": "none", "interest": "retrain_source", "catalogue": "retrain_source", "context": "retrain_source"}
    assert moved["interest"] == [] and moved["context"] == ["promo"]  # interests move the tokens, not one column
    assert {"price", "item_age_days", "price_bucket"} <= set(moved["catalogue"])
