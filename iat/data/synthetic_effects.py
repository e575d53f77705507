"""What each planted effect of the synthetic world is worth, and whether the benchmark can tell methods apart.

- ``effect_worth``: the oracle's test AUC with one term of the true click logit dropped, per term
  (``generate(..., terms=True)`` writes the terms). A term whose removal costs a lot is a signal a model can win.
- ``REVEALED_BY``: which part of a log reveals each term (see ``synthetic_world``).
- ``context_aggregates``: hand-made strict-past aggregates of the context of a user's past impressions (smoothed
  CTR of the user under the same promo flag, hour, domain, device), the feature engineering a practitioner would
  need to know the planted effects to write. Trees with and without them measure what the context of past
  impressions is worth beyond an item-id history.
"""

from __future__ import annotations

import pandas as pd

from iat.data.past import past_sum
from iat.metrics import auc

REVEALED_BY: dict[str, str] = {
    "promo": "context of past impressions",
    "habit": "context of past impressions",
    "domain_affinity": "context of past impressions",
    "price": "context of past impressions",
    "interest": "past items",
    "loyal_brand": "past items",
    "intent": "last few impressions (session)",
    "quality": "item's past",
    "popularity": "item's past",
    "hour_x_category": "current row",
    "device_x_category": "current row",
    "position": "current row",
}
CONTEXT_KEYS: tuple[str, ...] = ("promo", "hour", "domain", "device")


def effect_worth(df: pd.DataFrame, split: str = "test") -> pd.DataFrame:
    """Per planted term: the oracle AUC on ``split`` with that term dropped, and the loss against the full oracle."""
    terms = [c for c in df.columns if c.startswith("term_") and c != "term_base"]
    if not terms:
        raise ValueError("the log has no term_* columns: generate it with generate(..., terms=True)")
    d = df[df["split"] == split]
    logit = d[[*terms, "term_base"]].sum(axis=1).to_numpy()
    y = d["click"].to_numpy()
    full = auc(y, logit)
    rows = []
    for c in terms:
        dropped = auc(y, logit - d[c].to_numpy())
        name = c.removeprefix("term_")
        rows.append({"effect": name, "revealed_by": REVEALED_BY.get(name, "?"), "oracle_without": dropped, "worth": full - dropped})
    out = pd.DataFrame(rows).sort_values("worth", ascending=False).reset_index(drop=True)
    out.attrs["oracle"] = full
    return out


def context_aggregates(df: pd.DataFrame, prior_strength: float = 5.0) -> pd.DataFrame:
    """Smoothed strict-past CTR and count of each user under the row's own value of each context key."""
    ctr = float(df["click"].mean())  # a constant prior; the rows' own labels never enter their own aggregates
    out = pd.DataFrame(index=df.index)
    for key in CONTEXT_KEYS:
        n = past_sum(df, ["user_id", key])
        clicks = past_sum(df, ["user_id", key], "click")
        out[f"ctx_{key}_ctr"] = (clicks + prior_strength * ctr) / (n + prior_strength)
        out[f"ctx_{key}_n"] = n
    return out


def tree_auc(df: pd.DataFrame, features: list[str], categorical: list[str], seed: int = 0, threads: int = 1) -> dict[str, float]:
    """Valid and test AUC of LightGBM on ``features`` (``categorical`` among them), early stopping on valid."""
    import lightgbm as lgb

    part = {s: df[df["split"] == s] for s in ("train", "valid", "test")}
    params = {"objective": "binary", "metric": "auc", "verbose": -1, "seed": seed, "num_threads": threads,
              "learning_rate": 0.05, "num_leaves": 31, "min_data_in_leaf": 100, "feature_fraction": 0.8,
              "bagging_fraction": 0.8, "bagging_freq": 1}  # fmt: skip
    train = lgb.Dataset(part["train"][features], part["train"]["click"], categorical_feature=categorical)
    valid = lgb.Dataset(part["valid"][features], part["valid"]["click"], reference=train)
    booster = lgb.train(params, train, 2000, valid_sets=[valid], callbacks=[lgb.early_stopping(50, verbose=False)])
    return {s: auc(part[s]["click"].to_numpy(), booster.predict(part[s][features], num_iteration=booster.best_iteration)) for s in ("valid", "test")}


def resolving_power(df: pd.DataFrame, item_features: list[str], categorical: list[str], seed: int = 0) -> dict[str, dict[str, float]]:
    """Tree AUC with the log's features (which include the item-history cross features) vs the same plus the
    context aggregates: the margin is what reading the context of past impressions can win."""
    agg = context_aggregates(df)
    both = pd.concat([df, agg], axis=1)
    return {
        "log features": tree_auc(both, item_features, categorical, seed),
        "log features + context aggregates": tree_auc(both, item_features + list(agg.columns), categorical, seed),
    }

