import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from iat.data.io import read_dataset, write_dataset
from iat.data.past import past_sum
from iat.data.synthetic import ATTRIBUTION_WINDOW, CROSS_NUMERIC, generate
from iat.metrics import auc
from iat.schema import GROUPS, ORACLE_COLUMNS, REQUIRED_COLUMNS


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a, sa = generate(150, seed=3, progress=False)
    b, sb = generate(150, seed=3, progress=False)
    c, _ = generate(150, seed=4, progress=False)
    write_dataset(tmp_path / "a", a, sa)
    write_dataset(tmp_path / "b", b, sb)
    write_dataset(tmp_path / "c", c, sa)
    assert _digest(tmp_path / "a" / "instances.parquet") == _digest(tmp_path / "b" / "instances.parquet")
    assert _digest(tmp_path / "a" / "schema.yaml") == _digest(tmp_path / "b" / "schema.yaml")
    assert _digest(tmp_path / "a" / "instances.parquet") != _digest(tmp_path / "c" / "instances.parquet")
    back, schema = read_dataset(tmp_path / "a")
    pd.testing.assert_frame_equal(back, a)
    assert schema == sa


def test_contract_columns_and_feature_groups(small_log):
    df, schema = small_log
    for col in list(REQUIRED_COLUMNS) + ["conversion", "conversion_ts", *ORACLE_COLUMNS, *schema.feature_names]:
        assert col in df.columns, col
    assert len(schema.features) >= 30
    assert {f.group for f in schema.features} == set(GROUPS)
    assert df["instance_id"].is_unique
    assert set(df["domain"].unique()) == {"ads", "mall", "live"}
    # Hidden traits are not columns.
    for hidden in ("price_sens", "promo_aff", "habit_hour", "interest", "loyal_brand"):
        assert not any(hidden in c for c in df.columns)


def test_labels_and_delayed_conversions(small_log):
    df, _ = small_log
    assert set(df["click"].unique()) <= {0, 1}
    clicked = df["click"] == 1
    assert df.loc[~clicked, "conversion"].isna().all()
    assert df.loc[clicked, "conversion"].notna().all()
    conv = (df["conversion"] == 1).fillna(False)
    assert conv.sum() > 0
    # Known late: a conversion within the attribution window, a non-conversion when the window closes.
    delay = df["conversion_ts"] - df["ts"]
    assert ((delay[conv] > 0) & (delay[conv] <= ATTRIBUTION_WINDOW)).all()
    assert (delay[clicked & ~conv] == ATTRIBUTION_WINDOW).all()
    assert df.loc[~clicked, "conversion_ts"].isna().all()


def test_domains_share_users(small_log):
    df, _ = small_log
    per_user = df.groupby("user_id")["domain"].nunique()
    assert (per_user >= 2).mean() > 0.5


def test_history_lengths_heavy_tailed():
    df, _ = generate(3000, seed=11, progress=False)
    n = df.groupby("user_id").size()
    assert (n < 256).mean() > 0.85, "most users have fewer than 256 instances"
    assert (n > 1000).sum() >= 1, "some users have more than 1,000"


def test_cross_features_use_only_the_strict_past(small_log):
    df, _ = small_log
    rng = np.random.default_rng(0)
    for u in rng.choice(df["user_id"].unique(), 5, replace=False):
        d = df[df["user_id"] == u].sort_values("ts")
        for _, row in d.sample(min(20, len(d)), random_state=1).iterrows():
            past = d[d["ts"] < row["ts"]]
            assert row["u_prior_count"] == len(past)
            assert row["u_prior_clicks"] == past["click"].sum()
            assert row["u_cat_prior_clicks"] == past.loc[past["category"] == row["category"], "click"].sum()


def test_past_sum_ignores_rows_tied_on_ts():
    d = pd.DataFrame({"user_id": [1, 1, 1, 2], "ts": [5, 5, 6, 5], "click": [1, 1, 1, 1]})
    assert past_sum(d, ["user_id"], "click").tolist() == [0, 0, 2, 0]


def _lr_auc(train: pd.DataFrame, test: pd.DataFrame, cats: list[str], nums: list[str]) -> float:
    oh = OneHotEncoder(handle_unknown="ignore", min_frequency=5).fit(train[cats])
    sc = StandardScaler().fit(train[nums].astype(float))

    def X(d: pd.DataFrame) -> sparse.csr_matrix:
        return sparse.hstack([oh.transform(d[cats]), sparse.csr_matrix(sc.transform(d[nums].astype(float)))]).tocsr()

    m = LogisticRegression(max_iter=400, C=0.5).fit(X(train), train["click"])
    return auc(test["click"].to_numpy(), m.predict_proba(X(test))[:, 1])


def test_planted_signal_oracle_history_current_row():
    """Oracle >> current-row LR, and a summary of past impressions beats the current row alone."""
    df, schema = generate(1500, seed=5, progress=False)
    cut = df["ts"].quantile(0.8)
    train, test = df[df["ts"] < cut], df[df["ts"] >= cut]
    current = [f for f in schema.numeric if f not in CROSS_NUMERIC]
    oracle = auc(test["click"].to_numpy(), test["p_click"].to_numpy())
    row_only = _lr_auc(train, test, schema.categorical, current)
    with_history = _lr_auc(train, test, schema.categorical, current + CROSS_NUMERIC)
    print(f"\nAUC oracle={oracle:.4f} current-row LR={row_only:.4f} LR + past-impression summary={with_history:.4f}")
    assert oracle > row_only + 0.10
    assert with_history > row_only + 0.02


@pytest.mark.parametrize("bad", [0, -5])
def test_bad_user_count_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="users must be >= 1"):
        generate(bad, seed=0, progress=False)


def test_injected_shifts_change_the_world_after_the_shift_time():
    from iat.data.synthetic_world import Shift

    base, _ = generate(200, seed=1, progress=False)
    cut = base["ts"].min() + 0.5 * (base["ts"].max() - base["ts"].min())
    cat, _ = generate(200, seed=1, progress=False, shift=Shift(0.5, "catalogue"))
    before, after = cat[cat["ts"] < cut - 3600], cat[cat["ts"] >= cut + 86_400]
    assert not set(before["item_id"]) & set(after["item_id"]), "a new catalogue after the shift"
    ctx, _ = generate(200, seed=1, progress=False, shift=Shift(0.5, "context"))
    assert ctx.loc[ctx["ts"] >= cut + 86_400, "promo"].mean() > 0.5 > 0.3 > ctx.loc[ctx["ts"] < cut - 3600, "promo"].mean()
    with pytest.raises(ValueError, match="shift.kind"):
        Shift(0.5, "weather")
