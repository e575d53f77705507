"""The hidden world behind the synthetic log (v2): users' latent traits, the item catalogue, sessions, and the
true click / conversion model.

Hidden traits are never written as columns. They show only through a user's past impressions and outcomes,
which is what makes a user's history (and so an instance-token sequence) worth reading. Planted effects, by
what reveals them (the worth of each, as oracle AUC with the term dropped, is in ``docs/RESULTS.md``):

- only the **context of past impressions** with their outcomes (what an instance token carries and an
  item-id sequence does not): promo affinity (promo shown on half the impressions), a time-of-day habit, a
  per-domain affinity, price sensitivity;
- the user's own past **items**: drifting category interests, one or two loyal brands (items of a loyal brand
  are about 10% of a user's impressions), and a **short-term intent**: each session has an intent category
  that lifts clicks on it and that the session's earlier impressions (clicked or not) reveal, so only the
  last few impressions know it;
- the **item's** past (computable from the log: ``iat.data.synthetic.add_item_features``): quality and a
  popularity that moves over days;
- the current row alone: position, hour x category, device x category.

Users are not a fixed panel, and they change: half of them are active from the start, the others join at a
uniform day of the log (so some valid / test users have no train rows), with an activity rate per day; promo
affinity, domain affinities and the habit hour drift linearly over the log, as category interests do. A model
that memorises a user's traits in an id embedding meets new users it never saw and traits that moved since it
last saw them; one that reads the user's recent instances at request time does not.

Time: a user's impressions come in sessions (on average 8 impressions, a minute or so apart) and each request
shows 1-3 items at the same ts (positions 1..3), so rows of one user often share a timestamp, as real logs do.
The true probabilities are a pure function of (world, user, item, context, time, the session's intent), so the
A/B simulator can score candidates a logged row never showed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

DOMAINS: tuple[str, ...] = ("ads", "mall", "live")
N_CATEGORIES = 20
N_BRANDS = 120
N_SELLERS = 400
DAY = 86_400

# Weights of the click logit. Kept here, in one place, so a reader sees the planted signal at a glance.
W = {
    "interest": 0.5,
    "loyal_brand": 1.4,
    "price": 0.7,
    "promo": 1.6,
    "habit": 1.5,
    "hour_x_category": 0.5,
    "popularity": 0.5,
    "position": 0.12,
    "quality": 0.5,
    "domain_affinity": 1.0,
    "device_x_category": 0.3,
    "intent": 1.0,
}
BASE_LOGIT = {"ads": -3.2, "mall": -2.8, "live": -3.5}


@dataclass
class SyntheticWorld:
    """Everything the generator draws once per (seed, users): traits, catalogue and effect tables."""

    start_ts: int
    days: int
    # users
    n_events: np.ndarray  # planned impressions per user (heavy-tailed: activity rate x active days)
    join_day: np.ndarray  # first day the user is active (0 for half the users)
    interest0: np.ndarray  # [U, C] interest at the start
    interest_drift: np.ndarray  # [U, C] change over the whole log
    loyal_brand: np.ndarray  # [U, 2] brand ids (-1 = none)
    price_sens: np.ndarray
    promo_aff: np.ndarray  # at the start of the log
    promo_drift: np.ndarray  # change over the whole log
    habit_hour: np.ndarray  # at the start of the log
    habit_drift: np.ndarray  # hours the habit moves over the whole log
    habit_strength: np.ndarray
    domain_pref: np.ndarray  # [U, n_domains] probabilities
    domain_aff: np.ndarray  # [U, n_domains] click affinity at the start of the log
    domain_drift: np.ndarray  # [U, n_domains] change over the whole log
    user_obs: dict[str, np.ndarray]  # observable user features
    # items
    item_category: np.ndarray
    item_brand: np.ndarray
    item_seller: np.ndarray
    item_price: np.ndarray
    item_quality: np.ndarray
    item_launch_day: np.ndarray
    pop_base: np.ndarray
    pop_amp: np.ndarray
    pop_period: np.ndarray
    pop_phase: np.ndarray
    # effect tables
    hour_x_category: np.ndarray  # [24, C]
    device_x_category: np.ndarray  # [3, C]
    # knobs a shift turns (see ``shifted_world``)
    item_pool_start: int = 0  # impressions draw items from [item_pool_start, n_items)
    promo_rate: float = 0.5
    device_follows_os: float = 0.8

    @property
    def n_users(self) -> int:
        return len(self.n_events)

    @property
    def n_items(self) -> int:
        return len(self.item_category)

    def price_z(self, item: np.ndarray) -> np.ndarray:
        lp = np.log(self.item_price)
        return (lp[item] - lp.mean()) / lp.std()

    def popularity(self, item: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Item popularity that moves over days: a sample-level, time-varying effect."""
        day = (ts - self.start_ts) / DAY
        return self.pop_base[item] + self.pop_amp[item] * np.sin(2 * np.pi * day / self.pop_period[item] + self.pop_phase[item])

    def _frac(self, ts: np.ndarray) -> np.ndarray:
        return (np.asarray(ts) - self.start_ts) / (self.days * DAY)

    def interest(self, user: np.ndarray, category: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return self.interest0[user, category] + self.interest_drift[user, category] * self._frac(ts)

    def promo_affinity(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return self.promo_aff[user] + self.promo_drift[user] * self._frac(ts)

    def domain_affinity(self, user: np.ndarray, domain: np.ndarray, ts: np.ndarray) -> np.ndarray:
        return self.domain_aff[user, domain] + self.domain_drift[user, domain] * self._frac(ts)

    def habit(self, user: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """The user's habit hour at ts (it drifts by ``habit_drift`` hours over the log)."""
        return (self.habit_hour[user] + self.habit_drift[user] * self._frac(ts)) % 24

    def click_logit(self, *args: np.ndarray) -> np.ndarray:
        """Logit of P(click): the sum of ``click_terms(*args)`` (same arguments)."""
        return sum(self.click_terms(*args).values())

    def click_terms(
        self,
        user: np.ndarray,
        item: np.ndarray,
        ts: np.ndarray,
        hour: np.ndarray,
        promo: np.ndarray,
        position: np.ndarray,
        device: np.ndarray,
        domain: np.ndarray,
        intent: np.ndarray,
    ) -> dict[str, np.ndarray]:
        """The click logit as its terms (``base`` plus one per key of ``W``), for the effect-worth measurements;
        ``intent`` is the session's intent category (hidden, -1 = none)."""
        cat = self.item_category[item]
        loyal = (self.loyal_brand[user] == self.item_brand[item][:, None]).any(axis=1)
        habit = self.habit_strength[user] * np.cos(2 * np.pi * (hour - self.habit(user, ts)) / 24)
        return {
            "base": np.array([BASE_LOGIT[d] for d in DOMAINS])[domain],
            "interest": W["interest"] * self.interest(user, cat, ts),
            "loyal_brand": W["loyal_brand"] * loyal,
            "price": -W["price"] * self.price_sens[user] * self.price_z(item),
            "promo": W["promo"] * self.promo_affinity(user, ts) * promo,
            "habit": W["habit"] * habit,
            "hour_x_category": W["hour_x_category"] * self.hour_x_category[hour, cat],
            "popularity": W["popularity"] * self.popularity(item, ts),
            "position": -W["position"] * (position - 1),
            "quality": W["quality"] * self.item_quality[item],
            "domain_affinity": W["domain_affinity"] * self.domain_affinity(user, domain, ts),
            "device_x_category": W["device_x_category"] * self.device_x_category[device, cat],
            "intent": W["intent"] * (cat == intent),
        }

    def conversion_logit(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray, promo: np.ndarray) -> np.ndarray:
        """Logit of P(conversion | click): price sensitivity and quality matter more after the click."""
        cat = self.item_category[item]
        return (
            -0.8
            - 1.0 * self.price_sens[user] * self.price_z(item)
            + 0.8 * self.item_quality[item]
            + 0.6 * self.promo_affinity(user, ts) * promo
            + 0.4 * self.interest(user, cat, ts)
        )


def sample_world(n_users: int, rng: np.random.Generator, start_ts: int, days: int) -> SyntheticWorld:
    U, C = n_users, N_CATEGORIES
    n_items = int(np.clip(2 * n_users, 300, 100_000))
    # Half the users are there from the start, the others join on a uniform day. History lengths: a lognormal
    # rate per day times the active days; for users present all along the median is ~60, ~7% pass 256, a few 1,000.
    join_day = np.where(rng.random(U) < 0.5, 0, rng.integers(0, days, U))
    n_events = np.clip(np.round(rng.lognormal(np.log(60 / days), 1.0, U) * (days - join_day)), 5, 4000).astype(np.int64)

    # Sparse category interests: a few strong likes per user, the rest near neutral.
    interest0 = rng.normal(-0.3, 0.5, (U, C))
    likes = rng.random((U, C)).argsort(axis=1)[:, :3]
    np.put_along_axis(interest0, likes, rng.normal(1.2, 0.4, (U, 3)), axis=1)
    interest_drift = rng.normal(0.0, 0.9, (U, C))

    loyal_brand = rng.integers(0, N_BRANDS, (U, 2))
    loyal_brand[rng.random(U) < 0.5, 1] = -1  # half the users have only one loyal brand

    price_sens = rng.normal(0, 1, U)
    promo_aff = rng.normal(0, 1, U)
    habit_hour = rng.uniform(0, 24, U)
    habit_strength = rng.uniform(0.2, 1.3, U)
    domain_pref = rng.dirichlet(np.full(len(DOMAINS), 0.8), U)
    domain_aff = rng.normal(0, 0.7, (U, len(DOMAINS)))
    promo_drift = rng.normal(0, 1.0, U)
    habit_drift = rng.normal(0, 4.0, U)
    domain_drift = rng.normal(0, 0.7, (U, len(DOMAINS)))

    # Observable user features, some weakly tied to hidden traits (as real profiles are).
    city_tier = np.clip(np.round(2 - 0.6 * price_sens + rng.normal(0, 1, U)), 0, 4).astype(np.int64)
    user_obs = {
        "age_bucket": rng.integers(0, 7, U),
        "gender": rng.integers(0, 3, U),
        "city_tier": city_tier,
        "user_level": np.clip(np.log2(n_events).astype(np.int64) - 2, 0, 7),
        "os": rng.integers(0, 3, U),
        "member_tier": np.clip(np.round(1 + 0.5 * promo_aff + rng.normal(0, 1, U)), 0, 3).astype(np.int64),
        "reg_cohort": rng.integers(0, 12, U),
    }

    item_category = rng.integers(0, C, n_items)
    # Brands belong to categories (brand b sells mostly in category b % C).
    item_brand = (item_category + C * rng.integers(0, N_BRANDS // C, n_items)) % N_BRANDS
    cat_price = rng.lognormal(3.0, 0.7, C)
    return SyntheticWorld(
        start_ts=start_ts,
        days=days,
        n_events=n_events,
        join_day=join_day,
        interest0=interest0,
        interest_drift=interest_drift,
        loyal_brand=loyal_brand,
        price_sens=price_sens,
        promo_aff=promo_aff,
        promo_drift=promo_drift,
        habit_hour=habit_hour,
        habit_drift=habit_drift,
        habit_strength=habit_strength,
        domain_pref=domain_pref,
        domain_aff=domain_aff,
        domain_drift=domain_drift,
        user_obs=user_obs,
        item_category=item_category,
        item_brand=item_brand,
        item_seller=rng.integers(0, N_SELLERS, n_items),
        item_price=cat_price[item_category] * rng.lognormal(0, 0.5, n_items),
        item_quality=rng.normal(0, 0.6, n_items),
        item_launch_day=rng.integers(-365, 0, n_items),
        pop_base=rng.normal(0, 0.5, n_items),
        pop_amp=rng.uniform(0, 0.8, n_items),
        pop_period=rng.uniform(5, 30, n_items),
        pop_phase=rng.uniform(0, 2 * np.pi, n_items),
        hour_x_category=rng.normal(0, 1, (24, C)),
        device_x_category=rng.normal(0, 1, (3, C)),
    )


SHIFT_KINDS: tuple[str, ...] = ("interest", "catalogue", "context")


@dataclass(frozen=True)
class Shift:
    """A change of the world at fraction ``at`` of the log's time range (for drift monitoring)."""

    at: float = 0.5
    kind: str = "interest"
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 < self.at < 1.0:
            raise ValueError(f"shift.at must lie in (0, 1), got {self.at}")
        if self.kind not in SHIFT_KINDS:
            raise ValueError(f"shift.kind '{self.kind}' is not one of {SHIFT_KINDS}")


def shifted_world(world: SyntheticWorld, kind: str, rng: np.random.Generator) -> SyntheticWorld:
    """The world after a shift: users' interests reshuffled, a new item catalogue, or a new context mix."""
    if kind == "interest":
        return replace(world, interest0=rng.permuted(world.interest0, axis=1))
    if kind == "catalogue":
        n = world.n_items
        cat = rng.integers(0, N_CATEGORIES, n)
        new = {
            "item_category": cat,
            "item_brand": (cat + N_CATEGORIES * rng.integers(0, N_BRANDS // N_CATEGORIES, n)) % N_BRANDS,
            "item_seller": rng.integers(0, N_SELLERS, n),
            "item_price": np.exp(np.log(world.item_price).mean() + 0.9) * rng.lognormal(0, 0.7, n),
            "item_quality": rng.normal(0, 0.6, n),
            "item_launch_day": np.full(n, world.days // 2),
            "pop_base": rng.normal(0, 0.5, n),
            "pop_amp": rng.uniform(0, 0.8, n),
            "pop_period": rng.uniform(5, 30, n),
            "pop_phase": rng.uniform(0, 2 * np.pi, n),
        }
        joined = {k: np.concatenate([getattr(world, k), v]) for k, v in new.items()}
        return replace(world, item_pool_start=n, **joined)
    if kind == "context":
        return replace(world, habit_hour=(world.habit_hour + 8) % 24, promo_rate=0.9, device_follows_os=0.2)
    raise ValueError(f"shift kind '{kind}' is not one of {SHIFT_KINDS}")
