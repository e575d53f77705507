"""Token store: round trips per dtype, atomic writes under crashes, integrity checks, append, compaction, labels."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from iat.tokens import (
    CONVERSION_UNKNOWN,
    SourceMismatchError,
    TokenStore,
    TokenStoreError,
    append_segment,
    compact,
    format_inspection,
    inspect_store,
    set_conversion,
    write_store,
)
from iat.tokens import fsio
from iat.tokens.manifest import MANIFEST_FILE, PARTS_DIR

SRC = {"model": "u-iat", "version": "3", "run_id": "run-1", "config_hash": "abc123"}


def make_log(n: int = 400, users: int = 20, seed: int = 0, iid_start: int = 0, ts_start: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ts = ts_start + rng.integers(0, 1000, n)
    click = rng.integers(0, 2, n)
    conv = pd.array(np.where(click == 1, rng.integers(0, 2, n), 0), dtype="Int64")
    conv[click == 0] = pd.NA
    cts = pd.array(ts + rng.integers(1, 50, n), dtype="Int64")
    cts[click == 0] = pd.NA
    return {
        "user_id": rng.integers(0, users, n) * 1000 + 7,
        "ts": ts,
        "instance_id": iid_start + rng.permutation(n),
        "domain": rng.choice(["ads", "mall", "live"], n),
        "item_id": rng.integers(0, 10_000, n),
        "category": rng.integers(0, 30, n),
        "click": click,
        "conversion": conv,
        "conversion_ts": cts,
        "tokens": rng.normal(size=(n, 16)).astype(np.float32) * rng.uniform(0.1, 5, 16).astype(np.float32),
    }


def write(path: Path, log: dict[str, Any], dtype: str = "fp32", **kw: Any) -> Path:
    kind = "codes" if dtype == "uint8" else "dense"
    return write_store(path, **log, kind=kind, dtype=dtype, source=kw.pop("source", SRC), **kw)


def everything(store: TokenStore, log: dict[str, Any], L: int = 64) -> Any:
    """Fetch every user's full history (request after all ts)."""
    users = np.unique(log["user_id"])
    return store.fetch_before(users, np.full(len(users), 10**9), L)


def fetched_equal(a: Any, b: Any) -> None:
    for f in ("mask", "ts", "time_gap", "instance_id", "domain", "item_id", "category", "click", "conversion", "tokens"):
        np.testing.assert_array_equal(getattr(a, f), getattr(b, f), err_msg=f)


def listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# -- round trips ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["fp32", "fp16", "int8"])
def test_dense_round_trip_and_error_bounds(tmp_path: Path, dtype: str) -> None:
    log = make_log()
    store = TokenStore.open(write(tmp_path / "s", log, dtype), verify="full")
    assert (store.kind, store.dtype, store.dims, store.rows) == ("dense", dtype, (16,), 400)
    rows = store.all_rows()
    # rows come back sorted by (user, ts, instance_id) whatever the input order
    order = np.lexsort((log["instance_id"], log["ts"], log["user_id"]))
    np.testing.assert_array_equal(rows["instance_id"], log["instance_id"][order])
    r = everything(store, log, L=64)
    iid = r.instance_id[r.mask]
    pos = np.argsort(log["instance_id"])[iid]  # instance ids are 0..n-1
    got, want = r.tokens[r.mask], log["tokens"][pos]
    assert got.dtype == np.float32
    if dtype == "fp32":
        np.testing.assert_array_equal(got, want)
    elif dtype == "fp16":
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    else:
        scale = np.abs(log["tokens"]).max(axis=0) / 127
        assert (np.abs(got - want) <= scale / 2 + 1e-6).all()
        assert np.abs(got - want).max() > 0  # it is really quantised
        raw = store.fetch_before([log["user_id"][0]], [10**9], 8, decode_tokens=False)
        assert raw.tokens.dtype == np.int8 and raw.scale is not None


def test_codes_round_trip(tmp_path: Path) -> None:
    log = make_log(n=300)
    codes = np.random.default_rng(1).integers(0, 256, (300, 8, 3))
    store = TokenStore.open(write(tmp_path / "c", {**log, "tokens": codes}, "uint8"))
    assert store.dims == (8, 3)
    r = everything(store, log, L=64)
    assert r.tokens.shape[2:] == (8, 3) and r.tokens.dtype == np.uint8
    np.testing.assert_array_equal(r.tokens[r.mask], codes[np.argsort(log["instance_id"])[r.instance_id[r.mask]]])
    assert (r.tokens[~r.mask] == 0).all()


def test_bad_input_is_refused_with_the_field_named(tmp_path: Path) -> None:
    log = make_log(n=50)
    with pytest.raises(ValueError, match="instance_id: 1 ids repeat"):
        write(tmp_path / "a", {**log, "instance_id": np.r_[log["instance_id"][:-1], log["instance_id"][0]]})
    with pytest.raises(ValueError, match="click: values must be 0/1"):
        write(tmp_path / "b", {**log, "click": np.full(50, 2)})
    with pytest.raises(ValueError, match="not valid for kind 'dense'"):
        write_store(tmp_path / "c", **log, kind="dense", dtype="uint8", source=SRC)
    with pytest.raises(ValueError, match="source is missing keys"):
        write(tmp_path / "d", log, source={"model": "x"})
    with pytest.raises(ValueError, match="tokens: 1 non-finite"):
        bad = log["tokens"].copy()
        bad[3, 2] = np.nan
        write(tmp_path / "e", {**log, "tokens": bad})
    with pytest.raises(ValueError, match="overflow fp16"):
        write(tmp_path / "f", {**log, "tokens": log["tokens"] * 1e6}, "fp16")
    assert not any(tmp_path.iterdir())  # nothing half-written


# -- atomic writes ----------------------------------------------------------------------------------------
def test_existing_store_needs_overwrite_and_old_readers_keep_their_snapshot(tmp_path: Path) -> None:
    path = write(tmp_path / "s", make_log(seed=0))
    old = TokenStore.open(path)
    before = everything(old, make_log(seed=0))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write(path, make_log(seed=1))
    write(path, make_log(seed=1), overwrite=True)
    new = TokenStore.open(path)
    assert new.version == old.version + 1
    assert not np.array_equal(new.all_rows()["ts"], old.all_rows()["ts"])
    fetched_equal(everything(old, make_log(seed=0)), before)  # old mmaps survive the unlink
    assert len(list((path / PARTS_DIR).iterdir())) == 1  # superseded part removed


class Crash(Exception):
    pass


def crash_after(monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    real = fsio.save_npy
    calls = {"n": 0}

    def flaky(path: Path, arr: np.ndarray) -> dict[str, Any]:
        calls["n"] += 1
        if calls["n"] > k:
            raise Crash("simulated crash while writing")
        return real(path, arr)

    monkeypatch.setattr(fsio, "save_npy", flaky)


@pytest.mark.parametrize("k", [0, 3, 10])
def test_crash_mid_overwrite_keeps_previous_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, k: int) -> None:
    log0 = make_log(seed=0)
    path = write(tmp_path / "s", log0)
    before, files = everything(TokenStore.open(path), log0), listing(path)
    with monkeypatch.context() as m:
        crash_after(m, k)
        with pytest.raises(Crash):
            write(path, make_log(seed=1), overwrite=True)
    assert listing(path) == files  # no partial part, no temp file visible
    fetched_equal(everything(TokenStore.open(path, verify="full"), log0), before)
    write(path, make_log(seed=1), overwrite=True)  # re-running is safe
    assert TokenStore.open(path).version == 2


def test_crash_while_creating_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with monkeypatch.context() as m:
        crash_after(m, 4)
        with pytest.raises(Crash):
            write(tmp_path / "new", make_log())
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError, match="no token store"):
        TokenStore.open(tmp_path / "new")
    write(tmp_path / "new", make_log())
    assert TokenStore.open(tmp_path / "new").rows == 400


_HARD_CRASH = """
import os, sys, numpy as np
sys.path.insert(0, {tests!r})
from iat.tokens import fsio
from test_token_store import make_log, write
real = fsio.save_npy
calls = [0]
def dying(path, arr):
    calls[0] += 1
    if calls[0] > 5:
        os._exit(17)  # no cleanup handlers run: a kill -9 / power cut stand-in
    return real(path, arr)
fsio.save_npy = dying
write({path!r}, make_log(seed=1), overwrite={overwrite})
"""


@pytest.mark.parametrize("existing", [True, False])
def test_hard_crash_in_another_process(tmp_path: Path, existing: bool) -> None:
    path = tmp_path / "s"
    log0 = make_log(seed=0)
    if existing:
        write(path, log0)
        before = everything(TokenStore.open(path), log0)
    script = _HARD_CRASH.format(tests=str(Path(__file__).parent), path=str(path), overwrite=existing)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 17, proc.stderr
    if existing:
        fetched_equal(everything(TokenStore.open(path, verify="full"), log0), before)
        leftovers = [p.name for p in (path / PARTS_DIR).iterdir() if fsio.is_temp(p.name)]
    else:
        assert not path.exists()
        leftovers = [p.name for p in tmp_path.iterdir() if fsio.is_temp(p.name)]
    assert len(leftovers) == 1 and leftovers[0].startswith(".")  # hidden, never listed in a manifest
    write(path, make_log(seed=2), overwrite=existing)  # the next writer sweeps the dead writer's leftovers
    where = path / PARTS_DIR if existing else tmp_path
    assert not [p for p in where.iterdir() if fsio.is_temp(p.name)]


# -- integrity --------------------------------------------------------------------------------------------
def test_truncated_array_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "s", make_log())
    part = next((path / PARTS_DIR).iterdir())
    with open(part / "tokens.npy", "r+b") as f:
        f.truncate(f.seek(0, 2) - 64)
    with pytest.raises(TokenStoreError, match="tokens.npy is .* bytes but the manifest says .*truncated"):
        TokenStore.open(path)


def test_flipped_byte_is_caught_by_full_verification(tmp_path: Path) -> None:
    path = write(tmp_path / "s", make_log())
    target = next((path / PARTS_DIR).iterdir()) / "ts.npy"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0xFF
    target.write_bytes(bytes(data))
    TokenStore.open(path, verify="fast")  # same size: the fast check cannot see it
    with pytest.raises(TokenStoreError, match="checksum mismatch in .*ts.npy"):
        TokenStore.open(path, verify="full")


def test_manifest_disagreeing_with_files_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "s", make_log())
    m = json.loads((path / MANIFEST_FILE).read_text())
    m["dims"] = [32]
    (path / MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(TokenStoreError, match="tokens are \\[16\\], manifest dims \\[32\\]"):
        TokenStore.open(path)
    m["dims"], m["rows"] = [16], 401
    (path / MANIFEST_FILE).write_text(json.dumps(m))
    with pytest.raises(TokenStoreError, match="manifest says 401 rows but its parts hold 400"):
        TokenStore.open(path)


def test_other_source_model_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "s", make_log())
    TokenStore.open(path, expected_source={"model": "u-iat", "config_hash": "abc123"})
    with pytest.raises(SourceMismatchError, match="config_hash='abc123' \\(expected 'zzz'\\)"):
        TokenStore.open(path, expected_source={"config_hash": "zzz"})
    with pytest.raises(SourceMismatchError, match="another source model"):
        append_segment(path, **make_log(n=10, iid_start=10_000), source={**SRC, "version": "4"})


# -- append, labels, compaction -----------------------------------------------------------------------------
def test_append_is_visible_to_new_readers_only(tmp_path: Path) -> None:
    log0 = make_log(seed=0)
    path = write(tmp_path / "s", log0)
    old = TokenStore.open(path)
    seg = make_log(n=100, seed=5, iid_start=10_000, ts_start=1000)
    v = append_segment(path, **seg, source=SRC)
    new = TokenStore.open(path)
    assert (v, new.rows, len(new.parts)) == (2, 500, 2)
    assert old.rows == 400 and old.refresh().rows == 500
    u = seg["user_id"][0]
    got = new.fetch_before([u], [10**9], 256)
    assert set(seg["instance_id"][seg["user_id"] == u]) <= set(got.instance_id[got.mask])
    assert not set(seg["instance_id"]) & set(old.fetch_before([u], [10**9], 256).instance_id.ravel())
    with pytest.raises(ValueError, match="already in the store"):
        append_segment(path, **seg, source=SRC)  # a retried append cannot duplicate tokens
    assert TokenStore.open(path).rows == 500


def test_int8_append_reuses_the_scale_and_counts_clipping(tmp_path: Path) -> None:
    log = make_log()
    path = write(tmp_path / "s", log, "int8")
    seg = make_log(n=50, seed=3, iid_start=10_000)
    seg["tokens"] = log["tokens"][:50].copy()  # inside the calibrated range ...
    seg["tokens"][0] = 1e3  # ... except one row far beyond it
    append_segment(path, **seg, source=SRC)
    m = json.loads((path / MANIFEST_FILE).read_text())
    assert m["parts"][1]["int8_clipped_values"] == 16


def test_concurrent_append_never_shows_a_torn_segment(tmp_path: Path) -> None:
    base = make_log(n=200, users=5, seed=0)
    path = write(tmp_path / "s", base)
    users = np.unique(base["user_id"])
    n_seg, seg_rows = 12, 40

    def segment(i: int) -> dict[str, Any]:
        # each segment gives every user 8 rows at ts 10_000 + i: a torn segment would show 1..7 of them
        return {**make_log(n=seg_rows, users=5, seed=100 + i, iid_start=100_000 * (i + 1)),
                "user_id": np.repeat(users, seg_rows // len(users)), "ts": np.full(seg_rows, 10_000 + i),
                "conversion": None, "conversion_ts": None}  # fmt: skip

    errors: list[BaseException] = []

    def appender() -> None:
        try:
            for i in range(n_seg):
                append_segment(path, **segment(i), source=SRC)
        except BaseException as e:  # surfaced by the main thread
            errors.append(e)

    t = threading.Thread(target=appender)
    t.start()
    while True:
        alive = t.is_alive()  # read before opening, so the last pass sees the final state
        store = TokenStore.open(path)
        k = len(store.parts) - 1
        assert store.rows == 200 + k * seg_rows
        r = store.fetch_before(users, np.full(len(users), 10**9), 512)
        new_ts = r.ts[r.mask & (r.ts >= 10_000)].reshape(len(users), -1)
        assert new_ts.shape[1] == 8 * k
        np.testing.assert_array_equal(np.unique(new_ts), 10_000 + np.arange(k))
        if not alive:
            break
    t.join()
    assert not errors
    assert TokenStore.open(path).rows == 200 + n_seg * seg_rows


def test_set_conversion_is_visible_only_after_its_ts(tmp_path: Path) -> None:
    log = make_log()
    log["conversion"] = pd.array([pd.NA] * 400, dtype="Int64")
    log["conversion_ts"] = pd.array([pd.NA] * 400, dtype="Int64")
    path = write(tmp_path / "s", log)
    i = 5
    u, t, iid = log["user_id"][i], int(log["ts"][i]), log["instance_id"][i]
    set_conversion(path, [iid], [t + 100])
    store = TokenStore.open(path)

    def conv_at(req: int) -> int:
        r = store.fetch_before([u], [req], 512)
        return int(r.conversion[r.instance_id == iid][0])

    assert conv_at(t + 100) == CONVERSION_UNKNOWN  # a request at conversion_ts itself does not see it yet
    assert conv_at(t + 101) == 1
    set_conversion(path, [iid], [t + 200], conversion=0)  # a later update wins
    store = TokenStore.open(path)
    assert conv_at(t + 150) == CONVERSION_UNKNOWN and conv_at(t + 201) == 0
    with pytest.raises(ValueError, match="not in the store"):
        set_conversion(path, [123_456_789], [t])
    with pytest.raises(ValueError, match="known before their instance ts"):
        set_conversion(path, [iid], [t - 1])


def test_compaction_equals_the_appended_view(tmp_path: Path) -> None:
    log0 = make_log(seed=0)
    path = write(tmp_path / "s", log0, "int8")
    for i in range(3):
        append_segment(path, **make_log(n=80, seed=10 + i, iid_start=10_000 * (i + 1), ts_start=500 * i), source=SRC)
    set_conversion(path, log0["instance_id"][:20], log0["ts"][:20] + 5)
    segmented = TokenStore.open(path)
    rng = np.random.default_rng(0)
    req_u = rng.choice(np.unique(log0["user_id"]), 300)
    req_t = rng.integers(0, 2200, 300)
    before = segmented.fetch_before(req_u, req_t, 32)
    assert compact(path) == segmented.version + 1
    compacted = TokenStore.open(path, verify="full")
    assert len(compacted.parts) == 1 and not compacted.manifest["label_updates"]
    assert compacted.rows == segmented.rows == 640
    fetched_equal(compacted.fetch_before(req_u, req_t, 32), before)
    fetched_equal(segmented.fetch_before(req_u, req_t, 32), before)  # the old snapshot still reads
    assert compact(path) == compacted.version  # nothing to do


def test_open_retries_when_a_compaction_removes_parts_meanwhile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from iat.tokens import store as store_module

    path = write(tmp_path / "s", make_log(seed=0))
    append_segment(path, **make_log(n=50, seed=1, iid_start=10_000), source=SRC)
    stale = store_module.read_manifest(path)
    compact(path)  # deletes the parts the stale manifest lists
    calls = {"n": 0}
    real = store_module.read_manifest

    def first_stale(root: Path) -> dict[str, Any]:
        calls["n"] += 1
        return stale if calls["n"] == 1 else real(root)

    monkeypatch.setattr(store_module, "read_manifest", first_stale)
    store = TokenStore.open(path)
    assert store.version == stale["version"] + 1 and len(store.parts) == 1 and calls["n"] == 3


def test_empty_store_fetches_all_masked_and_accepts_appends(tmp_path: Path) -> None:
    empty = {k: v[:0] for k, v in make_log().items()}
    path = write(tmp_path / "s", empty)
    r = TokenStore.open(path).fetch_before([7, 8], [100, 100], 4)
    assert r.tokens.shape == (2, 4, 16) and not r.mask.any() and (r.click == -1).all()
    store = TokenStore.open(path).append(**make_log(n=30))
    assert store.rows == 30 and store.fetch_before([7], [10**9], 64).mask.any()


def test_inspect_reports_lengths(tmp_path: Path) -> None:
    log = make_log(n=400, users=20)
    path = write(tmp_path / "s", log, "fp16")
    info = inspect_store(path)
    lengths = np.unique(log["user_id"], return_counts=True)[1]
    assert info["users"] == len(lengths) and info["rows"] == 400
    assert info["length"]["max"] == lengths.max() and info["length"]["median"] == np.median(lengths)
    assert info["length"]["min"] == lengths.min() > 0
    assert 32 <= info["token_bytes_per_row"] < 33  # 16 x fp16 plus the .npy header share
    text = format_inspection(info)
    assert "dense fp16 dims=[16]" in text and "u-iat" in text


def test_unknown_user_and_scalar_ts(tmp_path: Path) -> None:
    log = make_log()
    store = TokenStore.open(write(tmp_path / "s", log))
    r = store.fetch_before([-1, log["user_id"][0], 10**12], 10**9, 8)
    assert r.mask.tolist()[0] == [False] * 8 and r.mask[1].all() and not r.mask[2].any()
    with pytest.raises(ValueError, match="L must be >= 1"):
        store.fetch_before([1], [1], 0)
    with pytest.raises(ValueError, match="ts must be one value or one per request"):
        store.fetch_before([1, 2], [1, 2, 3], 4)


def test_decode_gives_numpys_float32_values_bit_for_bit():
    """fetch decodes through torch (faster); the values are exactly numpy's conversion's."""
    from iat.tokens.codecs import decode

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 16)).astype(np.float16)
    assert np.array_equal(decode(x, "fp16", None), x.astype(np.float32)) and decode(x, "fp16", None).dtype == np.float32
    q = rng.integers(-127, 128, (300, 16)).astype(np.int8)
    scale = rng.uniform(0.001, 0.1, 16).astype(np.float32)
    assert np.array_equal(decode(q, "int8", scale), np.multiply(q, scale, dtype=np.float32))
    codes = rng.integers(0, 256, (5, 4, 3)).astype(np.uint8)
    assert decode(codes, "uint8", None) is codes
