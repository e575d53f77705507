"""MovieLens-100k as an instance log: one rating = one instance, ``click = rating >= 4``.

Source files (read directly, never copied into the repo: the GroupLens licence forbids redistribution):

- the copy the ``recbole`` wheel ships, ``recbole/dataset_example/ml-100k/ml-100k.{inter,user,item}``
  (atomic TSV files with typed headers such as ``user_id:token``); found without importing recbole,
  which would pull in its heavy dependencies. Install it with ``pip install --no-deps recbole==1.2.1``.
- or a GroupLens ``ml-100k`` directory (``u.data`` tab-separated; ``u.user`` and ``u.item`` '|'-separated,
  latin-1, with 19 genre flags).

Domains (for cross-domain transfer) group the 19 genres; a movie belongs to the first group, in this
priority, that holds any of its genres:

1. ``family``: Comedy, Children's, Animation, Musical, Fantasy, Horror, unknown
2. ``action``: Action, Adventure, Sci-Fi, Thriller, War, Western, Crime
3. ``drama``:  Drama, Romance, Film-Noir, Mystery, Documentary

Drama is last because it is the most common tag and co-occurs with everything; this order gives the most
even split (about 40k / 40k / 20k ratings, every domain rated by > 900 of the 943 users). ``genre`` (the
category column) is the item's first genre, in GroupLens order, inside its domain's group, so categories
nest in domains.

Features: user ``user_id, age_bucket, gender, occupation, zip_prefix`` (first character of the zip code:
the US zone digit, or the Canadian province letter); item ``item_id, genre, genre_count, release_year,
year_bucket`` (one movie has no release date: its ``release_year`` is the catalogue median and its
``year_bucket`` is ``"unknown"``); context ``hour, weekday`` (UTC, Monday = 0); cross ``user_prior_count,
user_prior_ctr, item_prior_count, item_prior_ctr`` over strictly earlier timestamps (iat.data.past). The
rating itself is the label and never a feature; there are no conversion labels, so those optional
columns are left out.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd

from iat.data.past import past_sum
from iat.schema import Feature, Schema

NAME = "movielens-100k"
CLICK_MIN_RATING = 4

# GroupLens order of the genre flags in u.item; recbole's ``class`` lists genres in the same order.
GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)
# Priority order: a movie goes to the first group holding any of its genres.
DOMAIN_GENRES: dict[str, frozenset[str]] = {
    "family": frozenset({"Comedy", "Children's", "Animation", "Musical", "Fantasy", "Horror", "unknown"}),
    "action": frozenset({"Action", "Adventure", "Sci-Fi", "Thriller", "War", "Western", "Crime"}),
    "drama": frozenset({"Drama", "Romance", "Film-Noir", "Mystery", "Documentary"}),
}
# MovieLens-1M's age groups: the same cut points serve 100k's raw ages.
AGE_EDGES: tuple[int, ...] = (18, 25, 35, 45, 50, 56)
AGE_LABELS: tuple[str, ...] = ("<18", "18-24", "25-34", "35-44", "45-49", "50-55", "56+")
# Weight of the running global click rate in the smoothed prior click rates (pseudo-observations).
PRIOR_STRENGTH = 5.0

RECBOLE_FILES = ("ml-100k.inter", "ml-100k.user", "ml-100k.item")
GROUPLENS_FILES = ("u.data", "u.user", "u.item")
INSTALL_HINT = (
    "install the copy recbole ships with `pip install --no-deps recbole==1.2.1`, "
    "or pass the path of a GroupLens ml-100k directory (u.data, u.user, u.item)"
)

FEATURES: tuple[Feature, ...] = (
    Feature("user_id", "user", "categorical"),
    Feature("age_bucket", "user", "categorical"),
    Feature("gender", "user", "categorical"),
    Feature("occupation", "user", "categorical"),
    Feature("zip_prefix", "user", "categorical"),
    Feature("item_id", "item", "categorical"),
    Feature("genre", "item", "categorical"),
    Feature("genre_count", "item", "numeric"),
    Feature("release_year", "item", "numeric"),
    Feature("year_bucket", "item", "categorical"),
    Feature("hour", "context", "categorical"),
    Feature("weekday", "context", "categorical"),
    Feature("user_prior_count", "cross", "numeric"),
    Feature("user_prior_ctr", "cross", "numeric"),
    Feature("item_prior_count", "cross", "numeric"),
    Feature("item_prior_ctr", "cross", "numeric"),
)


def recbole_data_dir() -> Path | None:
    """The ml-100k folder inside the installed recbole wheel, or None; recbole itself is not imported."""
    spec = importlib.util.find_spec("recbole")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        d = Path(root) / "dataset_example" / "ml-100k"
        if all((d / f).is_file() for f in RECBOLE_FILES):
            return d
    return None


def load_movielens(path: str | Path | None = None) -> tuple[pd.DataFrame, Schema]:
    """The 100,000 ratings as a contract log sorted by (ts, user_id, item_id), plus its schema.

    ``path``: a folder with recbole's ``ml-100k.*`` files or GroupLens's ``u.*`` files; None uses recbole's copy.
    """
    ratings, users, items, fmt = _read_raw(_locate(path))
    df = ratings.sort_values(["ts", "user_id", "item_id"], kind="mergesort").reset_index(drop=True)
    df.insert(0, "instance_id", np.arange(len(df), dtype=np.int64))
    df["click"] = (df.pop("rating") >= CLICK_MIN_RATING).astype(np.int64)
    df = df.merge(_user_features(users), on="user_id", how="left", validate="many_to_one")
    df = df.merge(_item_features(items), on="item_id", how="left", validate="many_to_one")
    for col, what in (("gender", "user"), ("genre", "item")):
        missing = df.loc[df[col].isna(), f"{what}_id"].unique()
        if len(missing):
            raise ValueError(f"ratings refer to {what}_id values absent from the {what} file: {sorted(missing)[:10]}")
    when = pd.to_datetime(df["ts"], unit="s", utc=True)
    df["hour"] = when.dt.hour.astype(np.int64)
    df["weekday"] = when.dt.weekday.astype(np.int64)
    _add_cross_features(df)

    schema = Schema(
        name=NAME,
        features=FEATURES,
        ts_min=int(df["ts"].min()),
        ts_max=int(df["ts"].max()),
        category_column="genre",
        description=(
            "MovieLens-100k (GroupLens; not redistributable): instance = rating, click = rating >= 4, "
            "domain = genre group (family > action > drama)"
        ),
        extra={"source_format": fmt, "click_min_rating": CLICK_MIN_RATING,
               "domains": {d: sorted(g) for d, g in DOMAIN_GENRES.items()}},
    )
    return df[schema.columns()], schema


def _locate(path: str | Path | None) -> tuple[Path, str]:
    if path is None:
        d = recbole_data_dir()
        if d is None:
            raise FileNotFoundError(f"MovieLens-100k not found: recbole's data is not installed; {INSTALL_HINT}")
        return d, "recbole"
    d = Path(path)
    if all((d / f).is_file() for f in RECBOLE_FILES):
        return d, "recbole"
    if all((d / f).is_file() for f in GROUPLENS_FILES):
        return d, "grouplens"
    raise FileNotFoundError(
        f"MovieLens-100k not found in '{d}': expected {', '.join(RECBOLE_FILES)} or {', '.join(GROUPLENS_FILES)}; "
        f"{INSTALL_HINT}"
    )


def _read_raw(located: tuple[Path, str]) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, str]:
    """Ratings (user_id, item_id, rating, ts), users (user_id, age, gender, occupation, zip),
    items (item_id, year: nullable, genres: list in GroupLens order), whichever the format."""
    d, fmt = located
    if fmt == "recbole":
        ratings = _read_atomic(d / "ml-100k.inter", ["user_id", "item_id", "rating", "timestamp"])
        users = _read_atomic(d / "ml-100k.user", ["user_id", "age", "gender", "occupation", "zip_code"])
        raw_items = _read_atomic(d / "ml-100k.item", ["item_id", "release_year", "class"])
        items = pd.DataFrame({
            "item_id": raw_items["item_id"],
            # recbole writes the missing year as the (misspelt) token "unkonwn".
            "year": pd.to_numeric(raw_items["release_year"], errors="coerce"),
            "genres": raw_items["class"].str.split(),
        })
    else:
        ratings = pd.read_csv(d / "u.data", sep="\t", header=None, dtype=str,
                              names=["user_id", "item_id", "rating", "timestamp"])
        users = pd.read_csv(d / "u.user", sep="|", header=None, dtype=str, keep_default_na=False,
                            names=["user_id", "age", "gender", "occupation", "zip_code"])
        raw_items = pd.read_csv(d / "u.item", sep="|", header=None, dtype=str, keep_default_na=False,
                                encoding="latin-1", names=["item_id", "title", "release_date", "video_date", "url",
                                                           *GENRES])
        flags = raw_items[list(GENRES)] == "1"
        items = pd.DataFrame({
            "item_id": raw_items["item_id"],
            # Dates look like 01-Jan-1995; one movie has none.
            "year": pd.to_numeric(raw_items["release_date"].str[-4:], errors="coerce"),
            "genres": [[g for g, on in zip(GENRES, row) if on] for row in flags.itertuples(index=False)],
        })
    ratings = ratings.rename(columns={"timestamp": "ts"})
    for frame, cols, src in ((ratings, ["user_id", "item_id", "rating", "ts"], "ratings"),
                             (users, ["user_id", "age"], "users"), (items, ["item_id"], "items")):
        for c in cols:
            frame[c] = _to_int64(frame[c], f"{src}.{c}")
    return ratings, users, items, fmt


def _read_atomic(path: Path, want: list[str]) -> pd.DataFrame:
    """A recbole atomic file, its ``name:type`` headers reduced to ``name``; only ``want`` columns kept."""
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    df.columns = [c.split(":", 1)[0] for c in df.columns]
    missing = [c for c in want if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: columns {missing} not found (header: {list(df.columns)})")
    return df[want].copy()


def _to_int64(s: pd.Series, field: str) -> pd.Series:
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() | (num != np.floor(num))
    if bad.any():
        raise ValueError(f"{field}: expected integers, got {s[bad].head(3).tolist()}")
    return num.astype(np.int64)


def _user_features(users: pd.DataFrame) -> pd.DataFrame:
    age = pd.cut(users["age"], bins=[-np.inf, *AGE_EDGES, np.inf], right=False, labels=list(AGE_LABELS))
    return pd.DataFrame({
        "user_id": users["user_id"],
        "age_bucket": age.astype(str),
        "gender": users["gender"].astype(str),
        "occupation": users["occupation"].astype(str),
        "zip_prefix": users["zip_code"].str[:1].str.upper(),
    })


def _item_features(items: pd.DataFrame) -> pd.DataFrame:
    unknown = sorted({g for gs in items["genres"] for g in gs} - set(GENRES))
    if unknown:
        raise ValueError(f"items.genres: unknown genres {unknown}")
    domains, primary = [], []
    for item_id, gs in zip(items["item_id"], items["genres"]):
        # A movie without any genre flag is what GroupLens calls "unknown".
        gs = gs or ["unknown"]
        dom = next(d for d, group in DOMAIN_GENRES.items() if group.intersection(gs))
        domains.append(dom)
        # An integer code (index in GENRES): the token store keeps the category of every token as int64.
        primary.append(GENRES.index(next(g for g in GENRES if g in gs and g in DOMAIN_GENRES[dom])))
    year = items["year"]
    decade = (year // 10 * 10).astype("Int64").astype(str) + "s"
    return pd.DataFrame({
        "item_id": items["item_id"],
        "domain": domains,
        "genre": primary,
        "genre_count": items["genres"].map(len).astype(np.float64),
        "release_year": year.fillna(year.median()).astype(np.float64),
        "year_bucket": decade.where(year.notna(), "unknown"),
    })


def _add_cross_features(df: pd.DataFrame) -> None:
    """Counts and smoothed click rates over strictly earlier instances; ``df`` is in ts order."""
    df["_all"] = 0
    glob_n = past_sum(df, ["_all"])
    # Laplace-smoothed running global rate: the prior the per-user/item rates shrink towards, itself from the past.
    glob_rate = (past_sum(df, ["_all"], "click") + 1.0) / (glob_n + 2.0)
    df.drop(columns="_all", inplace=True)
    for key in ("user", "item"):
        order = np.lexsort((df["ts"].to_numpy(), df[f"{key}_id"].to_numpy()))
        by_key = df.iloc[order]
        n, clicks = np.empty(len(df)), np.empty(len(df))
        n[order] = past_sum(by_key, [f"{key}_id"])
        clicks[order] = past_sum(by_key, [f"{key}_id"], "click")
        df[f"{key}_prior_count"] = n
        df[f"{key}_prior_ctr"] = (clicks + PRIOR_STRENGTH * glob_rate) / (n + PRIOR_STRENGTH)
