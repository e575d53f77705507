"""The GBDT baseline reads exactly the rankers' inputs, computes its aggregates and token pools correctly, learns,
and round-trips as a ranker bundle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.downstream import DownstreamData, DownstreamSpec, load_ranker, save_ranker, train_downstream
from iat.history import HistoryAssembler
from iat.models.batching import expand_histories
from iat.models.batching import RowBatches
from iat.models.gbdt import GBDTRanker, stack_features
from iat.models.registry import train_source
from iat.tokens import TokenStore
from iat.tokens.materialize import materialize
from iat.train import TrainConfig

SMALL_GRID = {"grid": [{"num_leaves": 15, "min_data_in_leaf": 50}], "max_rounds": 300}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    df, schema = generate(250, seed=21, progress=False)
    df = add_split(df)
    bundle = train_source(df, schema, "temporal", None, TrainConfig(epochs=1, threads=1, progress=False), n_boot=0)
    store = TokenStore.open(materialize(bundle, df, tmp_path_factory.mktemp("gbdt") / "store", progress=False))
    return DownstreamData.prepare(df, schema), store


def _batch(data: DownstreamData, store: TokenStore | None, rows: np.ndarray, L: int = 8) -> dict[str, torch.Tensor]:
    asm = HistoryAssembler(data.encoder, store, data.clicks, L=L, base_L=32)
    return asm.batch(data.encoder.transform(data.df.iloc[rows]))


def _test_features(data: DownstreamData, store: TokenStore | None, inputs: str, n: int):
    """(model, rows, batch with a history per row, features) of the first ``n`` test rows; the features are
    computed from the assembled batch (histories shared per (user, ts)), as training does."""
    model = GBDTRanker(data.encoder, {"inputs": inputs})
    rows = np.flatnonzero(data.split == "test")[:n]
    b = _batch(data, store, rows)
    return model, rows, expand_histories(b), model.features(b)


def test_sequence_aggregates_count_the_clicked_items_before_the_request(setup):
    data, _ = setup
    model, rows, _, x = _test_features(data, None, "seq", 300)
    names = model.feature_names()
    col = {n: i for i, n in enumerate(names)}
    df = data.df.iloc[rows]
    cat = data.encoder.schema.category_column
    for i in range(0, len(rows), 37):
        r = df.iloc[i]
        past = data.df[(data.df["user_id"] == r["user_id"]) & (data.df["ts"] < r["ts"]) & (data.df["click"] == 1)]
        past = past.sort_values(["ts", "instance_id"]).tail(32)
        assert x[i, col["seq_n"]] == len(past)
        assert x[i, col["seq_cat_n"]] == (past[cat] == r[cat]).sum()
        assert x[i, col["seq_item_n"]] == (past["item_id"] == r["item_id"]).sum()
    assert x.shape[1] == len(names) and len(names) == len(data.encoder.cat_names) + data.encoder.n_num + 7
    # ids of many values are plain numbers, not LightGBM categoricals (their categorical splits overfit)
    assert "id_user_id" in names and "cat_hour" in names


def test_token_pools_are_the_mean_recency_and_clicked_means(setup):
    data, store = setup
    _, rows, b, x = _test_features(data, store, "tokens", 64)
    D = store.dims[0]
    pools = x[:, -(3 * D + 1) :]
    tok, mask, click = b["tok"].numpy(), b["tok_mask"].numpy(), b["tok_click"].numpy() == 2
    for i in range(len(rows)):
        if mask[i].sum() == 0:
            continue
        assert pools[i, 0] == mask[i].sum()
        np.testing.assert_allclose(pools[i, 1 : 1 + D], tok[i][mask[i]].mean(0), atol=1e-5)
        w = 0.5 ** ((7 - np.arange(8)) / 8) * mask[i]
        np.testing.assert_allclose(pools[i, 1 + D : 1 + 2 * D], (w[:, None] * tok[i]).sum(0) / w.sum(), atol=1e-5)
        if (mask[i] & click[i]).any():
            np.testing.assert_allclose(pools[i, 1 + 2 * D :], tok[i][mask[i] & click[i]].mean(0), atol=1e-5)


def test_gbdt_learns_and_round_trips(setup, tmp_path):
    data, store = setup
    spec = DownstreamSpec("gbdt-tokens", "gbdt", {"inputs": "tokens", **SMALL_GRID}, "temporal", L=8)
    bundle, m = train_downstream(data, spec, store, TrainConfig(threads=1, progress=False))
    assert m["test"]["auc"] > 0.65 and m["params"] > 0 and m["best_epoch"] >= 1
    assert {"returning", "new"} & set(m["test"])  # test metrics split by whether the user had train rows
    back = load_ranker(save_ranker(bundle, tmp_path / "gbdt"))
    assert (tmp_path / "gbdt" / "model.txt").is_file() and back.config["token_source"] == store.source
    rows = np.flatnonzero(data.split == "test")
    asm = HistoryAssembler(data.encoder, store, data.clicks, L=8, base_L=32)
    src = RowBatches(data.encoder.transform(data.df.iloc[rows]), 512, assemble=asm.batch)
    x, _, _ = stack_features(bundle.model, src.batches(0), "click")
    np.testing.assert_array_equal(bundle.model.predict_features(x), back.model.predict_features(x))


def test_gbdt_spec_errors_are_clear():
    with pytest.raises(ValueError, match="reads tokens exactly when its inputs are 'tokens'"):
        DownstreamSpec("g", "gbdt", {"inputs": "tokens"})
    with pytest.raises(ValueError, match="unknown config keys"):
        GBDTRanker(None, {"leaves": 3})  # type: ignore[arg-type]  # the config is checked first
