"""The hidden world behind the synthetic log: users' latent traits, the item catalogue, and the true
click / conversion model.

Hidden traits are never written as columns. They show only through a user's past impressions and
outcomes, which is what makes a user's history (and so an instance-token sequence) worth reading:

- category interests that drift linearly over the log's time range;
- one or two loyal brands (rarely shown, so the evidence can lie hundreds of instances back);
- price sensitivity, promo affinity, a time-of-day habit and a per-domain affinity.

The true probabilities are a pure function of (world, user, item, context, time), so the A/B simulator
can score candidates a logged row never showed.
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
    "interest": 0.9,
    "loyal_brand": 1.4,
    "price": 0.7,
    "promo": 0.7,
    "habit": 0.7,
    "hour_x_category": 0.5,
    "popularity": 0.5,
    "position": 0.12,
    "quality": 0.5,
    "domain_affinity": 0.5,
    "device_x_category": 0.3,
}
BASE_LOGIT = {"ads": -2.0, "mall": -1.6, "live": -2.3}


@dataclass
class SyntheticWorld:
    """Everything the generator draws once per (seed, users): traits, catalogue and effect tables."""

    start_ts: int
    days: int
    # users
    n_events: np.ndarray  # planned impressions per user (heavy-tailed)
    interest0: np.ndarray  # [U, C] interest at the start
    interest_drift: np.ndarray  # [U, C] change over the whole log
    loyal_brand: np.ndarray  # [U, 2] brand ids (-1 = none)
    price_sens: np.ndarray
    promo_aff: np.ndarray
    habit_hour: np.ndarray
    habit_strength: np.ndarray
    domain_pref: np.ndarray  # [U, n_domains] probabilities
    domain_aff: np.ndarray  # [U, n_domains] click affinity
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
    promo_rate: float = 0.2
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

    def interest(self, user: np.ndarray, category: np.ndarray, ts: np.ndarray) -> np.ndarray:
        frac = (ts - self.start_ts) / (self.days * DAY)
        return self.interest0[user, category] + self.interest_drift[user, category] * frac

    def click_logit(
        self,
        user: np.ndarray,
        item: np.ndarray,
        ts: np.ndarray,
        hour: np.ndarray,
        promo: np.ndarray,
        position: np.ndarray,
        device: np.ndarray,
        domain: np.ndarray,
    ) -> np.ndarray:
        cat = self.item_category[item]
        loyal = (self.loyal_brand[user] == self.item_brand[item][:, None]).any(axis=1)
        habit = self.habit_strength[user] * np.cos(2 * np.pi * (hour - self.habit_hour[user]) / 24)
        base = np.array([BASE_LOGIT[d] for d in DOMAINS])[domain]
        return (
            base
            + W["interest"] * self.interest(user, cat, ts)
            + W["loyal_brand"] * loyal
            - W["price"] * self.price_sens[user] * self.price_z(item)
            + W["promo"] * self.promo_aff[user] * promo
            + W["habit"] * habit
            + W["hour_x_category"] * self.hour_x_category[hour, cat]
            + W["popularity"] * self.popularity(item, ts)
            - W["position"] * (position - 1)
            + W["quality"] * self.item_quality[item]
            + W["domain_affinity"] * self.domain_aff[user, domain]
            + W["device_x_category"] * self.device_x_category[device, cat]
        )

    def conversion_logit(self, user: np.ndarray, item: np.ndarray, ts: np.ndarray, promo: np.ndarray) -> np.ndarray:
        """Logit of P(conversion | click): price sensitivity and quality matter more after the click."""
        cat = self.item_category[item]
        return (
            -0.8
            - 1.0 * self.price_sens[user] * self.price_z(item)
            + 0.8 * self.item_quality[item]
            + 0.6 * self.promo_aff[user] * promo
            + 0.4 * self.interest(user, cat, ts)
        )


def sample_world(n_users: int, rng: np.random.Generator, start_ts: int, days: int) -> SyntheticWorld:
    U, C = n_users, N_CATEGORIES
    n_items = int(np.clip(2 * n_users, 300, 100_000))
    # History lengths: lognormal, median ~60; ~7% of users pass 256 and a few pass 1,000.
    n_events = np.clip(np.round(rng.lognormal(np.log(60), 1.0, U)), 5, 4000).astype(np.int64)

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
        interest0=interest0,
        interest_drift=interest_drift,
        loyal_brand=loyal_brand,
        price_sens=price_sens,
        promo_aff=promo_aff,
        habit_hour=habit_hour,
        habit_strength=habit_strength,
        domain_pref=domain_pref,
        domain_aff=domain_aff,
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
        return replace(world, habit_hour=(world.habit_hour + 8) % 24, promo_rate=0.6, device_follows_os=0.2)
    raise ValueError(f"shift kind '{kind}' is not one of {SHIFT_KINDS}")
