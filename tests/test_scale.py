"""Data at scale: chunked generation, part-by-part validation and streamed materialization equal the whole-log paths."""

import numpy as np
import pandas as pd
import pytest

from iat.data.files import load_log
from iat.data.io import dataset_parts, write_parts
from iat.data.split import add_split
from iat.data.synthetic import generate, generate_chunks, synthetic_schema
from iat.data.synthetic_world import Shift
from iat.models.registry import train_source
from iat.tokens import TokenStore
from iat.tokens.materialize import materialize, materialize_parts, shard_path
from iat.tokens.merge import merge_stores
from iat.train import TrainConfig
from iatcli.main import main
from quality import validate_log
from quality.parts import PartsThresholdError, validate_parts
from quality.result import INPUT_ROW


@pytest.mark.parametrize("shift", [None, Shift(0.4, "catalogue")])
def test_chunks_are_the_log_of_generate(shift):
    chunks = list(generate_chunks(250, seed=5, chunk_users=100, progress=False, shift=shift))
    assert len(chunks) == 3
    # each chunk: whole users of its own id range, ids a range of its own, in the chunk's (ts, user_id) order
    start = 0
    for k, c in enumerate(chunks):
        assert c["user_id"].between(100 * k, 100 * k + 99).all()
        np.testing.assert_array_equal(c["instance_id"], np.arange(start, start + len(c)))
        assert c[["ts", "user_id"]].apply(tuple, axis=1).is_monotonic_increasing
        start += len(c)
    whole, _ = generate(250, seed=5, chunk_users=100, progress=False, shift=shift)
    again = pd.concat(chunks, ignore_index=True).drop(columns="instance_id")
    again = again.sort_values(["ts", "user_id"], kind="stable").reset_index(drop=True)
    again.insert(0, "instance_id", np.arange(len(again), dtype=np.int64))
    pd.testing.assert_frame_equal(again, whole)


def _planted_parts(tmp_path):
    """Three parts with bad rows, including ids repeated across parts."""
    frames = [c.copy() for c in generate_chunks(90, seed=2, chunk_users=30, progress=False)]
    a, b, c = frames
    a.loc[3, "click"] = 2  # value: label not 0/1
    b.loc[5, "instance_id"] = a.loc[10, "instance_id"]  # a later duplicate, across parts
    b.loc[6, "instance_id"] = a.loc[3, "instance_id"]  # duplicates a row quarantined for its click: still later
    b.loc[7, "instance_id"] = b.loc[8, "instance_id"]  # within a part
    a["price"] = a["price"].astype(str)
    a.loc[20, "price"] = "cheap"  # type: this row never reaches the uniqueness check...
    c.loc[4, "instance_id"] = a.loc[20, "instance_id"]  # ...so its id is free for this row
    c.loc[9, "instance_id"] = a.loc[11, "instance_id"]
    c.loc[9, "click"] = 3  # a duplicate and a bad label: both reasons, in suite order
    return write_parts(tmp_path / "raw", frames, synthetic_schema())


def test_validation_by_parts_equals_the_whole_log(tmp_path):
    data = _planted_parts(tmp_path)
    whole = validate_log(pd.concat([load_log(p)[0] for p in dataset_parts(data)], ignore_index=True), synthetic_schema(), 1.0)
    res = validate_parts(data, tmp_path / "out", 1.0, progress=False)
    assert (res.n_input, res.n_clean, res.n_quarantine) == (whole.n_input, len(whole.clean), len(whole.quarantine))
    assert res.counts == whole.counts
    assert whole.counts["expect_column_values_to_be_unique(instance_id)"] == 4
    quarantine = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "out" / "quarantine").glob("part-*.parquet"))])
    expected = whole.quarantine["reasons"]
    pd.testing.assert_series_equal(quarantine["reasons"], expected, check_index_type=False)
    assert quarantine.index.name == INPUT_ROW
    clean = pd.concat([pd.read_parquet(p) for p in dataset_parts(res.paths["clean"])], ignore_index=True)
    pd.testing.assert_frame_equal(clean, whole.clean.reset_index(drop=True))
    with pytest.raises(PartsThresholdError, match="quarantined 6 of"):
        validate_parts(data, tmp_path / "strict", 0.0, progress=False)
    assert (tmp_path / "strict" / "validation_summary.json").is_file()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny")
    data = write_parts(folder / "data", generate_chunks(120, seed=4, chunk_users=40, progress=False), synthetic_schema())
    df = pd.concat([pd.read_parquet(p) for p in dataset_parts(data)], ignore_index=True)
    df = add_split(df)
    bundle = train_source(df, synthetic_schema(), "temporal", None, TrainConfig(epochs=1, threads=1, progress=False, batch_size=512), n_boot=0)
    return data, df, bundle


def _same_store(a: TokenStore, b: TokenStore) -> None:
    x, y = a.all_rows(), b.all_rows()
    assert x.keys() == y.keys()
    for k in x:
        assert x[k].tobytes() == y[k].tobytes(), k
    assert a.domains == b.domains and a.source == b.source and a.dtype == b.dtype
    assert (a.scale is None and b.scale is None) or a.scale.tobytes() == b.scale.tobytes()


@pytest.mark.parametrize("dtype", ["fp16", "int8"])
def test_streamed_materialization_equals_in_memory(tiny, tmp_path, dtype):
    data, df, bundle = tiny
    whole = TokenStore.open(materialize(bundle, df, tmp_path / "whole", dtype=dtype, progress=False), verify="full")
    streamed = TokenStore.open(materialize_parts(bundle, data, tmp_path / "streamed", dtype=dtype, progress=False), verify="full")
    _same_store(whole, streamed)
    assert not shard_path(tmp_path / "streamed", 0, 3).parent.exists()  # intermediate shards removed


def test_merge_in_small_blocks_of_hash_shards(tiny, tmp_path):
    _, df, bundle = tiny
    whole = TokenStore.open(materialize(bundle, df, tmp_path / "whole", dtype="int8", progress=False))
    for i in range(4):
        materialize(bundle, df, tmp_path / "s", shards=4, shard=i, progress=False)
    stores = [TokenStore.open(shard_path(tmp_path / "s", i, 4)) for i in range(4)]
    _same_store(whole, TokenStore.open(merge_stores(stores, tmp_path / "merged", "int8", block_rows=97), verify="full"))
    with pytest.raises(ValueError, match="more than one store"):
        merge_stores(stores + stores[:1], tmp_path / "twice", "fp16")


def test_cli_generates_and_validates_chunked(tmp_path, capsys):
    assert main(["generate", "--users", "40", "--seed", "1", "--out", str(tmp_path / "d"), "--chunked"]) == 0
    assert "in 1 parts" in capsys.readouterr().out
    assert main(["validate", str(tmp_path / "d"), "--out", str(tmp_path / "v")]) == 0
    out = capsys.readouterr().out
    assert "0 quarantined" in out and (tmp_path / "v" / "clean" / "part-00000.parquet").is_file()
