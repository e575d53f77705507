"""Seeded generator of industrial-shaped instance logs with ground truth (the embedded default data set).

Several domains (ads, mall, live) share users; users have heavy-tailed history lengths and hidden traits
(see ``synthetic_world``); 35 feature fields in four groups; click and delayed conversion labels; and the
true ``p_click`` (P(click)) and ``p_conversion`` (P(conversion | click)) of every row, which no model may read.
Same ``(users, seed, chunk_users)`` -> the same rows, bit for bit (each chunk of users has its own random stream).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from iat.data.past import past_sum, seconds_since_previous
from iat.data.synthetic_world import DAY, DOMAINS, Shift, SyntheticWorld, sample_world, shifted_world
from iat.schema import Feature, Schema

START_TS = 1_767_225_600  # 2026-01-01 00:00:00 UTC
DEFAULT_DAYS = 60
CHUNK_USERS = 2_000
ATTRIBUTION_WINDOW = 3 * DAY

USER_FEATURES = ["user_id", "age_bucket", "gender", "city_tier", "user_level", "os", "member_tier", "reg_cohort"]
ITEM_CATEGORICAL = ["item_id", "category", "brand", "seller_id", "price_bucket"]
ITEM_NUMERIC = ["price", "rating", "item_age_days", "item_ctr_1d", "shop_score"]
CONTEXT_CATEGORICAL = ["hour", "weekday", "device", "position", "promo", "network", "page", "weather", "is_weekend"]
CROSS_NUMERIC = [
    "u_prior_count",
    "u_prior_clicks",
    "u_prior_ctr",
    "u_cat_prior_count",
    "u_cat_prior_clicks",
    "u_item_prior_count",
    "u_brand_prior_clicks",
    "u_log_secs_since_last",
]


def synthetic_schema(start_ts: int = START_TS, days: int = DEFAULT_DAYS) -> Schema:
    feats = (
        [Feature(n, "user", "categorical") for n in USER_FEATURES]
        + [Feature(n, "item", "categorical") for n in ITEM_CATEGORICAL]
        + [Feature(n, "item", "numeric") for n in ITEM_NUMERIC]
        + [Feature(n, "context", "categorical") for n in CONTEXT_CATEGORICAL]
        + [Feature(n, "cross", "numeric") for n in CROSS_NUMERIC]
    )
    return Schema(
        name="synthetic",
        features=tuple(feats),
        ts_min=start_ts,
        ts_max=start_ts + days * DAY + 30 * DAY,  # conversions may arrive after the last impression
        category_column="category",
        description="Seeded synthetic log with hidden user traits; p_click / p_conversion are ground truth.",
    )


def sample_rows(
    world: SyntheticWorld, users: np.ndarray, n: np.ndarray, days: tuple[int, int], rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """``n[i]`` impressions of ``users[i]`` on days in [days[0], days[1]): when, where, which item, which context."""
    user = np.repeat(users, n)
    R = len(user)

    # Time: uniform day; hour drawn near the user's habit 60% of the time.
    day = rng.integers(days[0], days[1], R)
    near = rng.random(R) < 0.6
    hour = np.where(near, np.round(rng.normal(world.habit_hour[user], 2.0)) % 24, rng.integers(0, 24, R)).astype(np.int64)
    ts = world.start_ts + day * DAY + hour * 3600 + rng.integers(0, 3600, R)

    # Domain by the user's preference; item: half from the user's liked categories (what a recommender
    # would show), half from the whole catalogue.
    cum_dom = np.cumsum(world.domain_pref[user], axis=1)
    domain = (rng.random(R)[:, None] > cum_dom).sum(axis=1).clip(0, len(DOMAINS) - 1)
    pref = np.exp(world.interest0[user] * 1.5)
    cum_cat = np.cumsum(pref / pref.sum(axis=1, keepdims=True), axis=1)
    cat_pref = (rng.random(R)[:, None] > cum_cat).sum(axis=1).clip(0, cum_cat.shape[1] - 1)
    pool = np.arange(world.item_pool_start, world.n_items)
    order = pool[np.argsort(world.item_category[pool], kind="stable")]
    counts = np.bincount(world.item_category[pool], minlength=cum_cat.shape[1])
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    from_pref = order[starts[cat_pref] + (rng.random(R) * counts[cat_pref]).astype(np.int64)]
    item = np.where(rng.random(R) < 0.5, from_pref, rng.integers(world.item_pool_start, world.n_items, R))

    os_ = world.user_obs["os"][user]
    device = np.where(rng.random(R) < world.device_follows_os, os_, rng.integers(0, 3, R))
    return {
        "user": user,
        "item": item,
        "ts": ts,
        "hour": hour,
        "weekday": ((ts - world.start_ts) // DAY + 3) % 7,  # 2026-01-01 was a Thursday
        "domain": domain,
        "device": device,
        "position": rng.integers(1, 11, R),
        "promo": (rng.random(R) < world.promo_rate).astype(np.int64),
        "network": rng.choice(4, R, p=[0.55, 0.3, 0.1, 0.05]),
        "page": domain * 3 + rng.integers(0, 3, R),
        "weather": rng.choice(4, R, p=[0.5, 0.25, 0.2, 0.05]),
    }


def feature_frame(world: SyntheticWorld, r: dict[str, np.ndarray], rng: np.random.Generator) -> pd.DataFrame:
    """User, item and context features plus the true probabilities of the impressions in ``r``.

    Cross features and labels are not here: they depend on the user's log (see ``_chunk_frame``). The A/B
    simulator calls this for candidates a logged row never showed.
    """
    u, i, ts = r["user"], r["item"], r["ts"]
    logit = world.click_logit(u, i, ts, r["hour"], r["promo"], r["position"], r["device"], r["domain"])
    p_click = 1.0 / (1.0 + np.exp(-logit))
    p_conv = 1.0 / (1.0 + np.exp(-world.conversion_logit(u, i, ts, r["promo"])))
    price = world.item_price[i]
    day = (ts - world.start_ts) // DAY
    df = pd.DataFrame(
        {
            "user_id": u.astype(np.int64),
            "item_id": i.astype(np.int64),
            "ts": ts.astype(np.int64),
            "domain": np.array(DOMAINS, dtype=object)[r["domain"]],
            **{k: v[u].astype(np.int64) for k, v in world.user_obs.items()},
            "category": world.item_category[i].astype(np.int64),
            "brand": world.item_brand[i].astype(np.int64),
            "seller_id": world.item_seller[i].astype(np.int64),
            "price_bucket": np.clip(np.log2(price).astype(np.int64), 0, 12),
            "price": price.astype(np.float32),
            "rating": np.clip(3.5 + 0.8 * world.item_quality[i] + rng.normal(0, 0.4, len(u)), 1, 5).astype(np.float32),
            "item_age_days": (day - world.item_launch_day[i]).astype(np.float32),
            # A noisy real-time reading of the item's current popularity (a sample-level feature).
            "item_ctr_1d": (0.05 * np.exp(0.5 * world.popularity(i, ts)) * rng.lognormal(0, 0.3, len(u))).astype(np.float32),
            "shop_score": (world.item_seller[i] % 50 / 10 + rng.normal(0, 0.3, len(u))).astype(np.float32),
            "hour": r["hour"],
            "weekday": r["weekday"],
            "device": r["device"],
            "position": r["position"],
            "promo": r["promo"],
            "network": r["network"],
            "page": r["page"],
            "weather": r["weather"],
            "is_weekend": (r["weekday"] >= 5).astype(np.int64),
            "p_click": p_click.astype(np.float32),
            "p_conversion": p_conv.astype(np.float32),
        }
    )
    return df


def _chunk_frame(world: SyntheticWorld, users: np.ndarray, rng: np.random.Generator, shift: Shift | None) -> pd.DataFrame:
    n = world.n_events[users]
    if shift is None:
        df = feature_frame(world, sample_rows(world, users, n, (0, world.days), rng), rng)
    else:
        # Each user's impressions split across the shift day in proportion to time; the world changes there.
        cut = int(round(shift.at * world.days))
        n_before = rng.binomial(n, cut / world.days)
        after = shifted_world(world, shift.kind, np.random.default_rng([shift.seed, 2]))
        df = pd.concat(
            [
                feature_frame(world, sample_rows(world, users, n_before, (0, cut), rng), rng),
                feature_frame(after, sample_rows(after, users, n - n_before, (cut, world.days), rng), rng),
            ],
            ignore_index=True,
        )
    p_click = df["p_click"].to_numpy(np.float64)
    click = (rng.random(len(df)) < p_click).astype(np.int8)
    conv = np.where(click == 1, (rng.random(len(df)) < df["p_conversion"].to_numpy(np.float64)).astype(np.float64), np.nan)
    # Labels become known late: a conversion when it happens (hours to days after the click), a non-conversion
    # when the attribution window closes. Unclicked rows have no conversion label at all.
    delay = np.minimum(np.ceil(rng.exponential(0.75 * DAY, len(df))).astype(np.int64) + 60, ATTRIBUTION_WINDOW)
    ts = df["ts"].to_numpy()
    conv_ts = np.where(conv == 1, ts + delay, np.where(conv == 0, ts + ATTRIBUTION_WINDOW, -1))
    at = df.columns.get_loc("domain") + 1
    df.insert(at, "click", click)
    df.insert(at + 1, "conversion", pd.array(conv, dtype="Float64").astype("Int8"))
    df.insert(at + 2, "conversion_ts", pd.array(np.where(conv_ts < 0, None, conv_ts), dtype="Int64"))
    return add_cross_features(df)


def add_cross_features(df: pd.DataFrame) -> pd.DataFrame:
    """User x past aggregates; computed per chunk, which holds whole users."""
    df = df.sort_values(["user_id", "ts"], kind="stable").reset_index(drop=True)
    df["u_prior_count"] = past_sum(df, ["user_id"]).astype(np.float32)
    df["u_prior_clicks"] = past_sum(df, ["user_id"], "click").astype(np.float32)
    df["u_prior_ctr"] = ((df["u_prior_clicks"] + 0.2) / (df["u_prior_count"] + 2.0)).astype(np.float32)
    df["u_cat_prior_count"] = past_sum(df, ["user_id", "category"]).astype(np.float32)
    df["u_cat_prior_clicks"] = past_sum(df, ["user_id", "category"], "click").astype(np.float32)
    df["u_item_prior_count"] = past_sum(df, ["user_id", "item_id"]).astype(np.float32)
    df["u_brand_prior_clicks"] = past_sum(df, ["user_id", "brand"], "click").astype(np.float32)
    secs = seconds_since_previous(df)
    df["u_log_secs_since_last"] = np.where(secs < 0, -1.0, np.log1p(np.maximum(secs, 0))).astype(np.float32)
    return df


def generate(
    users: int,
    seed: int = 0,
    days: int = DEFAULT_DAYS,
    progress: bool = True,
    shift: Shift | None = None,
    chunk_users: int = CHUNK_USERS,
) -> tuple[pd.DataFrame, Schema]:
    """Generate a log for ``users`` users; rows sorted by (ts, user_id), ``instance_id`` in that order.

    The rows are those of ``generate_chunks`` (same arguments), concatenated, re-sorted by (ts, user_id) and
    re-numbered: a global time order, which a stream of chunks cannot give (it would need every chunk first).
    ``shift`` changes the world at a point in time (interest / catalogue / context), for drift monitoring.
    """
    chunks = list(generate_chunks(users, seed, days, progress, shift, chunk_users))
    df = pd.concat(chunks, ignore_index=True).drop(columns="instance_id")
    df = df.sort_values(["ts", "user_id"], kind="stable").reset_index(drop=True)
    df.insert(0, "instance_id", np.arange(len(df), dtype=np.int64))
    return df, synthetic_schema(START_TS, days)


def generate_chunks(
    users: int,
    seed: int = 0,
    days: int = DEFAULT_DAYS,
    progress: bool = True,
    shift: Shift | None = None,
    chunk_users: int = CHUNK_USERS,
) -> Iterator[pd.DataFrame]:
    """The log of ``generate`` as a stream of frames, one per chunk of ``chunk_users`` consecutive user ids.

    A chunk holds whole users (their cross features need only their own past), sorted by (ts, user_id).
    ``instance_id``: chunk k owns the id range [offset_k, offset_k + rows_k), numbered in the chunk's
    (ts, user_id) order; offset_k is the planned row count of the users before it (``world.n_events``), so a
    chunk needs no other chunk and ids stay unique across chunks. Peak memory: the world (per-user traits,
    about 0.5 KB a user, and the item catalogue) plus one chunk (about 100 rows a user).
    """
    if users < 1:
        raise ValueError(f"users must be >= 1, got {users}")
    if days < 2:
        raise ValueError(f"days must be >= 2, got {days}")
    if chunk_users < 1:
        raise ValueError(f"chunk_users must be >= 1, got {chunk_users}")
    world = sample_world(users, np.random.default_rng([seed, 0]), START_TS, days)
    starts = range(0, users, chunk_users)
    offsets = np.concatenate([[0], np.cumsum([world.n_events[s : s + chunk_users].sum() for s in starts])])
    for k, s in enumerate(tqdm(starts, desc="generate", unit="chunk", disable=not progress)):
        # One generator per chunk of users: results do not depend on how many chunks run before.
        rng = np.random.default_rng([seed, 1, k])
        df = _chunk_frame(world, np.arange(s, min(s + chunk_users, users)), rng, shift)
        df = df.sort_values(["ts", "user_id"], kind="stable").reset_index(drop=True)
        if len(df) != offsets[k + 1] - offsets[k]:  # the id ranges were planned from these counts
            raise RuntimeError(f"chunk {k}: {len(df)} rows, but its users' planned impressions are {offsets[k + 1] - offsets[k]}")
        df.insert(0, "instance_id", np.arange(offsets[k], offsets[k + 1], dtype=np.int64))
        yield df


def world_for(users: int, seed: int = 0, days: int = DEFAULT_DAYS) -> SyntheticWorld:
    """The hidden world of ``generate(users, seed, days)`` (for oracle scoring and the A/B simulator)."""
    return sample_world(users, np.random.default_rng([seed, 0]), START_TS, days)
