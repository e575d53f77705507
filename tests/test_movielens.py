"""MovieLens-100k loader: read from recbole's copy (installed by the project's setup), never from the repo."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from iat.data import movielens
from iat.data.io import read_dataset, write_dataset
from iat.data.movielens import GENRES, load_movielens, recbole_data_dir
from iat.schema import REQUIRED_COLUMNS, Schema

RAW = recbole_data_dir()
needs_data = pytest.mark.skipif(
    RAW is None, reason="recbole's ml-100k copy is not installed (pip install --no-deps recbole==1.2.1)"
)


def _raw_rows(name: str) -> list[list[str]]:
    """A recbole atomic file's data rows, read with the csv module rather than the loader's code."""
    with open(RAW / name, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return rows[1:]


@pytest.fixture(scope="module")
def loaded() -> tuple[pd.DataFrame, Schema]:
    if RAW is None:
        pytest.skip("recbole's ml-100k copy is not installed (pip install --no-deps recbole==1.2.1)")
    return load_movielens()


@needs_data
def test_rows_ids_and_click_rate(loaded):
    df, schema = loaded
    raw = _raw_rows("ml-100k.inter")
    assert len(df) == len(raw) == 100_000
    expected = sum(float(r[2]) >= 4 for r in raw) / len(raw)
    assert df["click"].mean() == pytest.approx(expected, abs=1e-12)
    assert 0.55 < df["click"].mean() < 0.56
    assert set(df["click"].unique()) == {0, 1}
    assert df["instance_id"].is_unique
    assert (df["instance_id"].to_numpy() == np.arange(len(df))).all()
    assert df[["ts", "user_id", "item_id"]].apply(tuple, axis=1).is_monotonic_increasing
    assert set(df["user_id"]) == {int(r[0]) for r in raw} and df["user_id"].nunique() == 943
    assert set(df["item_id"]) == {int(r[1]) for r in raw} and df["item_id"].nunique() == 1682
    assert schema.ts_min == min(int(r[3]) for r in raw) and schema.ts_max == max(int(r[3]) for r in raw)


@needs_data
def test_contract_columns_and_schema(loaded, tmp_path):
    df, schema = loaded
    assert list(df.columns) == schema.columns()
    assert "rating" not in df.columns
    for col, kind in REQUIRED_COLUMNS.items():
        assert df[col].notna().all(), col
        if kind in ("int", "label"):
            assert df[col].dtype == np.int64, col
    assert not df[schema.feature_names].isna().any().any()
    assert schema.name == "movielens-100k" and schema.category_column == "genre"
    assert {f.group for f in schema.features} == {"user", "item", "context", "cross"}
    assert df["hour"].between(0, 23).all() and df["weekday"].between(0, 6).all()
    # 874724710 is 1997-09-20 03:05:10 UTC, a Saturday.
    first = df.loc[df["ts"] == 874724710].iloc[0]
    assert (first["hour"], first["weekday"]) == (3, 5)
    back_df, back_schema = read_dataset(write_dataset(tmp_path / "ml", df, schema))
    assert back_schema == schema
    pd.testing.assert_frame_equal(back_df, df)


@needs_data
def test_domains_and_genres_follow_the_documented_mapping(loaded):
    df, _ = loaded
    assert df["domain"].value_counts().to_dict() == {"family": 40012, "action": 39917, "drama": 20071}
    # Every domain is rated by nearly every user: the point of the split is cross-domain transfer.
    assert (df.groupby("domain")["user_id"].nunique() > 900).all()
    items = {int(r[0]): (r[2], r[3].split()) for r in _raw_rows("ml-100k.item")}
    per_item = df.drop_duplicates("item_id").set_index("item_id")
    for item_id, (year, genres) in items.items():
        row = per_item.loc[item_id]
        dom = next(d for d, g in movielens.DOMAIN_GENRES.items() if g.intersection(genres))
        assert row["domain"] == dom
        genre = movielens.GENRES[row["genre"]]
        assert genre in genres and genre in movielens.DOMAIN_GENRES[dom]
        assert row["genre_count"] == len(genres)
        if year.isdigit():
            assert row["release_year"] == int(year) and row["year_bucket"] == f"{int(year) // 10 * 10}s"
        else:
            assert row["year_bucket"] == "unknown"
    # Toy Story: Animation Children's Comedy -> family, first in GroupLens order.
    assert (per_item.loc[1, "domain"], movielens.GENRES[per_item.loc[1, "genre"]]) == ("family", "Animation")


@needs_data
def test_cross_features_use_only_the_past(loaded):
    df, _ = loaded
    firsts = df.groupby("user_id")["ts"].transform("min") == df["ts"]
    assert (df.loc[firsts, "user_prior_count"] == 0).all()
    assert (df.loc[~firsts, "user_prior_count"] > 0).all()
    # Brute force on a sample: counts and click sums over strictly earlier timestamps.
    glob_ts, glob_click = df["ts"].to_numpy(), df["click"].to_numpy()
    for i in np.random.default_rng(0).choice(len(df), 200, replace=False):
        row = df.iloc[i]
        earlier = glob_ts < row["ts"]
        glob_rate = (glob_click[earlier].sum() + 1) / (earlier.sum() + 2)
        for key in ("user", "item"):
            past = earlier & (df[f"{key}_id"].to_numpy() == row[f"{key}_id"])
            n, clicks = past.sum(), glob_click[past].sum()
            assert row[f"{key}_prior_count"] == n
            expected = (clicks + movielens.PRIOR_STRENGTH * glob_rate) / (n + movielens.PRIOR_STRENGTH)
            assert row[f"{key}_prior_ctr"] == pytest.approx(expected, rel=1e-12)
    # Changing a later label leaves every earlier row's cross features unchanged.
    cut = len(df) // 2
    flipped = df.copy()
    flipped.loc[cut:, "click"] = 1 - flipped.loc[cut:, "click"]
    movielens._add_cross_features(flipped)
    cols = ["user_prior_count", "user_prior_ctr", "item_prior_count", "item_prior_ctr"]
    strictly_before = df["ts"] < df.loc[cut, "ts"]
    pd.testing.assert_frame_equal(flipped.loc[strictly_before, cols], df.loc[strictly_before, cols])
    assert not flipped.loc[cut:, "user_prior_ctr"].equals(df.loc[cut:, "user_prior_ctr"])


def _write_grouplens(src: Path, out: Path) -> None:
    """Rewrite recbole's files in GroupLens's u.* layout (to a temporary folder only)."""
    out.mkdir()
    inter = pd.read_csv(src / "ml-100k.inter", sep="\t", dtype=str)
    inter.to_csv(out / "u.data", sep="\t", header=False, index=False)
    users = pd.read_csv(src / "ml-100k.user", sep="\t", dtype=str)
    users.to_csv(out / "u.user", sep="|", header=False, index=False)
    items = pd.read_csv(src / "ml-100k.item", sep="\t", dtype=str, keep_default_na=False)
    with open(out / "u.item", "w", encoding="latin-1") as f:
        for item_id, title, year, classes in items.itertuples(index=False):
            date = f"01-Jan-{year}" if year.isdigit() else ""
            flags = "|".join("1" if g in classes.split() else "0" for g in GENRES)
            f.write(f"{item_id}|{title.encode('latin-1', 'replace').decode('latin-1')}|{date}||http://x|{flags}\n")


@needs_data
def test_grouplens_directory_gives_the_same_log(loaded, tmp_path):
    df, schema = loaded
    _write_grouplens(RAW, tmp_path / "ml-100k")
    gl_df, gl_schema = load_movielens(tmp_path / "ml-100k")
    pd.testing.assert_frame_equal(gl_df, df)
    assert gl_schema.features == schema.features and gl_schema.extra["source_format"] == "grouplens"


def test_missing_data_gives_a_clear_error(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match=r"pip install --no-deps recbole==1\.2\.1") as e:
        load_movielens(tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "u.data" in str(e.value)
    monkeypatch.setattr(movielens, "recbole_data_dir", lambda: None)
    with pytest.raises(FileNotFoundError, match=r"recbole's data is not installed.*pip install --no-deps recbole"):
        load_movielens()
