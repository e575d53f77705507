"""Seeded generator of industrial-shaped instance logs with ground truth (the embedded default data set, v2).

Several domains (ads, mall, live) share users; users have heavy-tailed history lengths, sessions and hidden
traits (see ``synthetic_world``); 36 feature fields in four groups; click and delayed conversion labels; and the
true ``p_click`` (P(click)) and ``p_conversion`` (P(conversion | click)) of every row, which no model may read.
Every observable column is computable from a real log: catalogue facts (category, brand, seller, price, launch
day), the request's context, and aggregates of the strict past (the user's past in the cross group, the item's
and the seller's past in the item group, conversions counted only once known). The item aggregates are
computed over the rows of one chunk of users (``chunk_users``; the whole log up to 2,000 users).
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
ITEM_NUMERIC = ["price", "item_age_days"]
# Item-side aggregates of the strict past (``add_item_features``); a smoothed rate shrinks to the running global rate.
ITEM_PAST_NUMERIC = ["item_prior_count", "item_prior_ctr", "item_prior_cvr", "seller_prior_ctr"]
PRIOR_STRENGTH = 10.0
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
        + [Feature(n, "item", "numeric") for n in ITEM_NUMERIC + ITEM_PAST_NUMERIC]
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


# Sessions and requests: a user's impressions come in sessions (a new one starts with probability 1/8 at each
# impression), a session in one domain and on one device with one intent category; inside a session, requests a
# minute or so apart, each showing 1-3 items at the same ts.
SESSION_MEAN = 8
NEW_REQUEST = 0.55  # probability that the next impression of a session starts a new request
MAX_REQUEST = 3
REQUEST_GAP_S = 60.0
# Where a shown item comes from: the session's intent category, one of the user's loyal brands, the user's liked
# categories, or the whole catalogue (what a recommender mixing intent, loyalty and exploration would show).
ITEM_SOURCES = {"intent": 0.3, "loyal_brand": 0.1, "liked": 0.3, "catalogue": 0.3}
INTENT_FROM_LIKES = 0.5  # a session's intent is one of the user's liked categories this often, else any category


def _pick(counts: np.ndarray, order: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A uniform member of each ``group`` (items sorted into ``order`` by group, ``counts`` per group), and whether
    the group had any member."""
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    have = counts[group] > 0
    pos = starts[group] + (rng.random(len(group)) * np.maximum(counts[group], 1)).astype(np.int64)
    return order[np.minimum(pos, len(order) - 1)], have


def _draw_category(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    return (rng.random(len(weights))[:, None] > cum).sum(axis=1).clip(0, weights.shape[1] - 1)


def sample_rows(
    world: SyntheticWorld,
    users: np.ndarray,
    n: np.ndarray,
    days: tuple[int, int],
    rng: np.random.Generator,
    intent_of: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """``n[i]`` impressions of ``users[i]`` on days in [days[0], days[1]): when, where, which item, which context,
    and the hidden ``intent`` of the session each one belongs to. ``intent_of[i]``: the intent of every session of
    entry i instead of a drawn one (the A/B simulator's candidates belong to their request's session); the random
    draws are the same either way."""
    user = np.repeat(users, n)
    R = len(user)
    first = np.zeros(R, bool)
    first[(np.cumsum(n) - n)[n > 0]] = True
    new_session = first | (rng.random(R) < 1.0 / SESSION_MEAN)
    sess = np.cumsum(new_session) - 1
    s_user = user[new_session]
    S = len(s_user)

    # Session: day (once the user has joined), start hour (near the user's habit of that day 60% of the time),
    # domain, device, intent.
    first_day = np.minimum(np.maximum(days[0], world.join_day[s_user]), days[1] - 1)
    day = rng.integers(first_day, days[1])
    near = rng.random(S) < 0.6
    habit = world.habit(s_user, world.start_ts + day * DAY)
    hour0 = np.where(near, np.round(rng.normal(habit, 2.0)) % 24, rng.integers(0, 24, S)).astype(np.int64)
    start = world.start_ts + day * DAY + hour0 * 3600 + rng.integers(0, 3600, S)
    domain = _draw_category(world.domain_pref[s_user], rng)
    os_ = world.user_obs["os"][s_user]
    device = np.where(rng.random(S) < world.device_follows_os, os_, rng.integers(0, 3, S))
    liked = _draw_category(np.exp(world.interest0[s_user] * 1.5), rng)
    intent = np.where(rng.random(S) < INTENT_FROM_LIKES, liked, rng.integers(0, world.interest0.shape[1], S))
    if intent_of is not None:
        intent = np.repeat(intent_of, n)[new_session]

    # Requests inside a session: the same ts for the items of one request, a gap before the next request.
    new_request = new_session | (rng.random(R) < NEW_REQUEST)
    pos = np.arange(R) - np.flatnonzero(new_request)[np.cumsum(new_request) - 1]
    new_request |= pos % MAX_REQUEST == 0  # a request shows at most MAX_REQUEST items
    req = np.cumsum(new_request) - 1
    position = np.arange(R) - np.flatnonzero(new_request)[req] + 1
    gap = np.where(new_request & ~new_session, np.ceil(rng.exponential(REQUEST_GAP_S, R)), 0).astype(np.int64)
    run = np.cumsum(gap)
    ts = start[sess] + run - run[np.flatnonzero(new_session)][sess]

    # Items: from the session's intent, a loyal brand, the user's liked categories, or the whole catalogue.
    pool = np.arange(world.item_pool_start, world.n_items)
    C = world.interest0.shape[1]
    by_cat = pool[np.argsort(world.item_category[pool], kind="stable")]
    cat_counts = np.bincount(world.item_category[pool], minlength=C)
    by_brand = pool[np.argsort(world.item_brand[pool], kind="stable")]
    brand_counts = np.bincount(world.item_brand[pool], minlength=world.loyal_brand.max() + 1)
    src = _draw_category(np.tile(list(ITEM_SOURCES.values()), (R, 1)), rng)
    from_intent, _ = _pick(cat_counts, by_cat, intent[sess], rng)
    liked_row = _draw_category(np.exp(world.interest0[user] * 1.5), rng)
    from_liked, _ = _pick(cat_counts, by_cat, liked_row, rng)
    lb = world.loyal_brand[user]
    which = np.where((lb[:, 1] >= 0) & (rng.random(R) < 0.5), 1, 0)
    from_loyal, has_loyal = _pick(brand_counts, by_brand, lb[np.arange(R), which], rng)
    from_catalogue = rng.integers(world.item_pool_start, world.n_items, R)
    item = np.choose(src, [from_intent, np.where(has_loyal, from_loyal, from_catalogue), from_liked, from_catalogue])

    hour = ((ts - world.start_ts) % DAY) // 3600
    dom = domain[sess]
    return {
        "user": user,
        "item": item,
        "ts": ts,
        "hour": hour,
        "weekday": ((ts - world.start_ts) // DAY + 3) % 7,  # 2026-01-01 was a Thursday
        "domain": dom,
        "device": device[sess],
        "position": position,
        "promo": (rng.random(R) < world.promo_rate).astype(np.int64),
        "network": rng.choice(4, R, p=[0.55, 0.3, 0.1, 0.05]),
        "page": dom * 3 + rng.integers(0, 3, R),
        "weather": rng.choice(4, R, p=[0.5, 0.25, 0.2, 0.05]),
        "intent": intent[sess],
    }


def feature_frame(world: SyntheticWorld, r: dict[str, np.ndarray], terms: bool = False) -> pd.DataFrame:
    """User, item (catalogue) and context features plus the true probabilities of the impressions in ``r``.

    Aggregates of the past (cross and item-past features) and labels are not here: they depend on the log (see
    ``_chunk_frame``). The A/B simulator calls this for candidates a logged row never showed. ``terms``: also the
    click logit's terms as ``term_<name>`` columns (ground truth for measuring what each planted effect is worth).
    """
    u, i, ts = r["user"], r["item"], r["ts"]
    parts = world.click_terms(u, i, ts, r["hour"], r["promo"], r["position"], r["device"], r["domain"], r["intent"])
    logit = sum(parts.values())
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
            "item_age_days": (day - world.item_launch_day[i]).astype(np.float32),
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
            **({f"term_{k}": v.astype(np.float32) for k, v in parts.items()} if terms else {}),
        }
    )
    return df


def _chunk_frame(world: SyntheticWorld, users: np.ndarray, rng: np.random.Generator, shift: Shift | None, terms: bool = False) -> pd.DataFrame:
    n = world.n_events[users]
    if shift is None:
        df = feature_frame(world, sample_rows(world, users, n, (0, world.days), rng), terms)
    else:
        # Each user's impressions split across the shift day in proportion to time; the world changes there.
        cut = int(round(shift.at * world.days))
        join = world.join_day[users]
        n_before = rng.binomial(n, np.clip((cut - join) / (world.days - join), 0.0, 1.0))
        after = shifted_world(world, shift.kind, np.random.default_rng([shift.seed, 2]))
        df = pd.concat(
            [
                feature_frame(world, sample_rows(world, users, n_before, (0, cut), rng), terms),
                feature_frame(after, sample_rows(after, users, n - n_before, (cut, world.days), rng), terms),
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
    return add_item_features(add_cross_features(df))


def add_cross_features(df: pd.DataFrame) -> pd.DataFrame:
    """User x past aggregates; computed per chunk, which holds whole users. Returns rows sorted by (user, ts)."""
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


def add_item_features(df: pd.DataFrame, log: pd.DataFrame | None = None) -> pd.DataFrame:
    """Item and seller aggregates of the strict past: impressions, smoothed CTR, and the smoothed conversion rate
    of the item's clicks whose label was known before the row (``conversion_ts`` < ts, the delayed-label rule).

    ``log``: when given, only its rows count (the A/B simulator's arm log; ``df`` holds candidates, which were not
    shown and so are not events); otherwise every row of ``df`` counts for the rows after it.
    """
    if log is None:
        both = df.assign(_one=1.0)
    else:
        unseen = {"_one": np.nan, "click": np.nan, "conversion": np.nan, "conversion_ts": np.nan}
        both = pd.concat([log.assign(_one=1.0), df.assign(**unseen)], ignore_index=True)
    both["_all"] = 0

    def smoothed(hits: np.ndarray, trials: np.ndarray, prior: np.ndarray) -> np.ndarray:
        return (hits + PRIOR_STRENGTH * prior) / (trials + PRIOR_STRENGTH)

    def past(keys: list[str], value: str, known_at: str | None = None) -> np.ndarray:
        return past_sum(both, keys, value, known_at)

    # running global rates (smoothed towards a constant): what the item and seller rates shrink to
    ctr0 = (past(["_all"], "click") + 1.0) / (past(["_all"], "_one") + 10.0)
    cvr0 = (past(["_all"], "conversion", "conversion_ts") + 1.0) / (past(["_all"], "click", "conversion_ts") + 10.0)
    item_n = past(["item_id"], "_one")
    out = {
        "item_prior_count": item_n,
        "item_prior_ctr": smoothed(past(["item_id"], "click"), item_n, ctr0),
        "item_prior_cvr": smoothed(past(["item_id"], "conversion", "conversion_ts"), past(["item_id"], "click", "conversion_ts"), cvr0),
        "seller_prior_ctr": smoothed(past(["seller_id"], "click"), past(["seller_id"], "_one"), ctr0),
    }
    rows = np.arange(len(both)) >= (0 if log is None else len(log))
    df = df.copy()
    for k, v in out.items():
        df[k] = v[rows].astype(np.float32)
    return df


def generate(
    users: int,
    seed: int = 0,
    days: int = DEFAULT_DAYS,
    progress: bool = True,
    shift: Shift | None = None,
    chunk_users: int = CHUNK_USERS,
    terms: bool = False,
) -> tuple[pd.DataFrame, Schema]:
    """Generate a log for ``users`` users; rows sorted by (ts, user_id), ``instance_id`` in that order.

    The rows are those of ``generate_chunks`` (same arguments), concatenated, re-sorted by (ts, user_id) and
    re-numbered: a global time order, which a stream of chunks cannot give (it would need every chunk first).
    ``shift`` changes the world at a point in time (interest / catalogue / context), for drift monitoring.
    ``terms`` adds the click logit's terms as ``term_<name>`` columns (ground truth; never a model input).
    """
    chunks = list(generate_chunks(users, seed, days, progress, shift, chunk_users, terms))
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
    terms: bool = False,
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
        df = _chunk_frame(world, np.arange(s, min(s + chunk_users, users)), rng, shift, terms)
        df = df.sort_values(["ts", "user_id"], kind="stable").reset_index(drop=True)
        if len(df) != offsets[k + 1] - offsets[k]:  # the id ranges were planned from these counts
            raise RuntimeError(f"chunk {k}: {len(df)} rows, but its users' planned impressions are {offsets[k + 1] - offsets[k]}")
        df.insert(0, "instance_id", np.arange(offsets[k], offsets[k + 1], dtype=np.int64))
        yield df


def world_for(users: int, seed: int = 0, days: int = DEFAULT_DAYS) -> SyntheticWorld:
    """The hidden world of ``generate(users, seed, days)`` (for oracle scoring and the A/B simulator)."""
    return sample_world(users, np.random.default_rng([seed, 0]), START_TS, days)
