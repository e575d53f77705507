"""Materialization: every instance gets the token its source model computes, sharding changes nothing."""

import numpy as np
import pytest

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.models.registry import train_source
from iat.tokens import TokenStore
from iat.tokens.materialize import encode_instances, materialize, publish_shards, shard_path, user_shard
from iat.train import TrainConfig


@pytest.fixture(scope="module")
def log():
    df, schema = generate(120, seed=4, progress=False)
    return add_split(df), schema


@pytest.fixture(scope="module")
def bundles(log):
    df, schema = log
    cfg = TrainConfig(epochs=1, threads=1, progress=False, batch_size=512)
    return {k: train_source(df, schema, k, None, cfg, n_boot=0) for k in ("temporal", "user_order", "hgaq")}


def test_every_instance_gets_its_own_token(log, bundles, tmp_path):
    df, _ = log
    store = TokenStore.open(materialize(bundles["temporal"], df, tmp_path / "t", dtype="fp32", progress=False))
    assert store.rows == len(df) and store.kind == "dense" and store.dims == (64,)
    rows = store.all_rows()
    pos = np.argsort(df["instance_id"].to_numpy())[np.searchsorted(np.sort(df["instance_id"].to_numpy()), rows["instance_id"])]
    expect = encode_instances(bundles["temporal"], df.iloc[pos].reset_index(drop=True), progress=False)
    np.testing.assert_array_equal(rows["tokens"], expect)
    assert store.source["model"] == "iat-source-synthetic-temporal" and store.source["version"] == bundles["temporal"].config["version"]


def test_token_is_a_pure_function_of_the_row(log, bundles):
    df, _ = log
    rows = df.sample(50, random_state=0)
    alone = encode_instances(bundles["user_order"], rows, progress=False)
    within = encode_instances(bundles["user_order"], df, progress=False)[df.index.get_indexer(rows.index)]
    np.testing.assert_allclose(alone, within, rtol=0, atol=1e-6)


def test_post_sit_and_codes(log, bundles, tmp_path):
    df, _ = log
    pre = encode_instances(bundles["user_order"], df, progress=False)
    post = encode_instances(bundles["user_order"], df, post_sit=True, progress=False)
    assert pre.shape == post.shape and not np.allclose(pre, post)
    with pytest.raises(ValueError, match="post-SIT"):
        encode_instances(bundles["temporal"], df, post_sit=True, progress=False)
    codes = TokenStore.open(materialize(bundles["hgaq"], df, tmp_path / "h", progress=False))
    assert codes.kind == "codes" and codes.dtype == "uint8" and codes.dims == (bundles["hgaq"].model.T, 3)


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_sharded_run_equals_unsharded(log, bundles, tmp_path, dtype):
    df, _ = log
    whole = TokenStore.open(materialize(bundles["temporal"], df, tmp_path / "whole", dtype=dtype, progress=False), verify="full")
    K = 3
    assert len(np.unique(user_shard(df["user_id"].to_numpy(), K))) == K
    for i in range(K):
        materialize(bundles["temporal"], df, tmp_path / "sharded", dtype=dtype, shards=K, shard=i, progress=False)
        assert shard_path(tmp_path / "sharded", i, K).is_dir()
    merged = TokenStore.open(publish_shards(tmp_path / "sharded", K, dtype=dtype), verify="full")
    a, b = whole.all_rows(), merged.all_rows()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    assert whole.source == merged.source and whole.domains == merged.domains
    assert (whole.scale is None and merged.scale is None) or whole.scale.tobytes() == merged.scale.tobytes()
