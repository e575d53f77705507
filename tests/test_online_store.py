"""The Redis online token store against the file store, on a real redis-server on 127.0.0.1: identical
histories for the same rows (ties, labels, appends, every field and dtype), per-user retention, the atomic switch
of a published version, and acknowledged ingests surviving a kill -9 of the writer."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from iat.tokens import TokenStore, append_segment, set_conversion, write_store
from iat.history import ClickIndex
from iat.tokens.online import RedisClickIndex, RedisTokenStore, publish
from iat.tokens.redis_server import RedisServer
from tests.test_fetch_properties import SRC, columns, scenarios

FIELDS = ("tokens", "mask", "ts", "time_gap", "instance_id", "domain", "item_id", "category", "click", "conversion")


@pytest.fixture(scope="module")
def server():
    with RedisServer() as s:
        yield s


def _same(a: Any, b: Any, where: str) -> None:
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and x.shape == y.shape, f"{where}: {f} {x.dtype}{x.shape} vs {y.dtype}{y.shape}"
        np.testing.assert_array_equal(x, y, err_msg=f"{where}: {f}")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(sc=scenarios())
def test_redis_and_file_backends_return_identical_histories(server, sc: dict[str, Any]) -> None:
    """The same rows written to both (a published base, then appends and label updates through each backend's
    own write path): every fetch is the same in every field, domains included."""
    if not any(r["part"] == 0 for r in sc["rows"]):
        sc["dtype"] = "fp32"
    client = server.client()
    client.flushall()
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        parts = [[r for r in sc["rows"] if r["part"] == p] for p in range(3)]
        write_store(tmp / "s", **columns(parts[0]), kind="dense", dtype=sc["dtype"], source=SRC)
        publish(TokenStore.open(tmp / "s"), client)
        online = RedisTokenStore.open(client)
        for rows in parts[1:]:
            if rows:
                append_segment(tmp / "s", **columns(rows), source=SRC)
                online.append(**columns(rows), source=SRC)
        if sc["updates"]:
            u = sc["updates"]
            args = ([x["iid"] for x in u], [x["cts"] for x in u], [x["conv"] for x in u])
            set_conversion(tmp / "s", *args)
            online.set_conversion(*args)
        offline = TokenStore.open(tmp / "s")
        req_u = np.array([u for u, _ in sc["requests"]], np.int64)
        req_t = np.array([t for _, t in sc["requests"]], np.int64)
        _same(online.fetch_before(req_u, req_t, sc["L"]), offline.fetch_before(req_u, req_t, sc["L"]), "fetch")
        assert online.domains == offline.domains and online.rows == offline.rows
        # the clicked-item sequence of the base ranker, from both (padding aside)
        a, b = RedisClickIndex(online).fetch_items(req_u, req_t, sc["L"]), ClickIndex.from_store(offline).fetch_items(req_u, req_t, sc["L"])
        np.testing.assert_array_equal(a[3], b[3])
        for x, y in zip(a[:3], b[:3]):
            np.testing.assert_array_equal(x[a[3]], y[b[3]])
        if sc["dtype"] == "int8":  # stored values too (undecoded), with the same scale
            a, b = online.fetch_before(req_u, req_t, sc["L"], decode_tokens=False), offline.fetch_before(req_u, req_t, sc["L"], decode_tokens=False)
            np.testing.assert_array_equal(a.tokens, b.tokens)
            np.testing.assert_array_equal(a.scale, b.scale)
    finally:
        shutil.rmtree(tmp)


def _log(n_users: int = 5, per_user: int = 30, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    n = n_users * per_user
    return {
        "user_id": np.repeat(np.arange(n_users), per_user), "ts": rng.integers(0, 200, n), "instance_id": rng.permutation(n) + 10,
        "domain": rng.choice(["ads", "mall"], n), "item_id": rng.integers(0, 50, n), "category": rng.integers(0, 5, n),
        "click": rng.integers(0, 2, n), "conversion": None, "conversion_ts": None, "tokens": rng.normal(size=(n, 4)).astype(np.float32),
    }  # fmt: skip


def _published(server, path, log: dict[str, Any], dtype: str) -> RedisTokenStore:
    """A file store of ``log`` at ``path`` published to an emptied Redis; the online store opened on it."""
    client = server.client()
    client.flushall()
    write_store(path, **log, kind="dense", dtype=dtype, source=SRC)
    publish(TokenStore.open(path), client)
    return RedisTokenStore.open(client)


def test_duplicates_and_unknown_labels_are_refused_as_in_the_file_store(server, tmp_path) -> None:
    log = _log()
    online = _published(server, tmp_path / "s", log, "fp16")
    one = {k: (v[:1] if v is not None else None) for k, v in log.items()}
    with pytest.raises(ValueError, match="already in the store"):
        online.append(**one, source=SRC)
    with pytest.raises(ValueError, match="not in the store"):
        online.set_conversion([10**9], 500, 1)
    with pytest.raises(ValueError, match="cannot go into a store"):
        online.append(**{**one, "instance_id": np.array([10**8])}, source={**SRC, "version": "other"})
    assert online.rows == len(log["ts"])


def test_retention_keeps_each_users_last_rows(server, tmp_path) -> None:
    """Memory bounded by users x N: after publishing and after every ingest, a user holds its last N rows, the
    index only theirs, and a fetch after them equals the file store's last N."""
    client = server.client()
    client.flushall()
    log, N = _log(per_user=30), 8
    write_store(tmp_path / "s", **log, kind="dense", dtype="fp32", source=SRC)
    publish(TokenStore.open(tmp_path / "s"), client, retention=N)
    online = RedisTokenStore.open(client)
    assert online.rows == 5 * N
    more = _log(per_user=4, seed=1)
    more["instance_id"] = more["instance_id"] + 10_000
    more["ts"] = more["ts"] + 1_000
    append_segment(tmp_path / "s", **more, source=SRC)
    assert online.append(**more, source=SRC) == 5 * 4  # each ingest trimmed one old row
    assert online.rows == 5 * N and max(client.zcard(f"{online.keys['user']}{u}") for u in range(5)) == N
    users, late = np.arange(5), np.full(5, 10_000)
    _same(online.fetch_before(users, late, N), TokenStore.open(tmp_path / "s").fetch_before(users, late, N), "retention")
    assert (online.fetch_before(users, late, 32).lengths == N).all()  # nothing older is left to fetch
    # an id the trim dropped is no longer indexed: its label cannot be set, and memory does not keep it
    dropped = int(log["instance_id"][np.argsort(log["ts"][:30], kind="stable")[0]])
    assert not online.locate_instances([dropped])[0]
    # the clicked-item sequence holds the clicks of the kept rows, after publish and after the ingests alike
    kept = TokenStore.open(tmp_path / "s").fetch_before(users, late, N)
    item, _, _, mask = RedisClickIndex(online).fetch_items(users, late, 32)
    for b in range(5):
        want = kept.item_id[b][kept.mask[b] & (kept.click[b] == 1)].tolist()
        assert item[b][mask[b]].tolist() == want, b


def test_a_label_batch_with_an_unknown_id_writes_nothing(server, tmp_path) -> None:
    log = _log()
    online = _published(server, tmp_path / "s", log, "fp32")
    known = int(log["instance_id"][0])
    with pytest.raises(ValueError, match="not in the store"):
        online.set_conversion([known, 10**9], 10**6, 1)
    with pytest.raises(ValueError, match="known before"):
        online.set_conversion([known], int(log["ts"][0]) - 1, 1)
    assert online.instance(known)["conversion"] == -1  # untouched by either


def test_publish_switches_versions_atomically(server, tmp_path) -> None:
    client = server.client()
    client.flushall()
    log = _log()
    write_store(tmp_path / "a", **log, kind="dense", dtype="fp32", source=SRC)
    v1 = publish(TokenStore.open(tmp_path / "a"), client)
    reader = RedisTokenStore.open(client)
    users, late = np.arange(5), np.full(5, 10_000)
    before = reader.fetch_before(users, late, 16)
    log2 = {**log, "tokens": log["tokens"] + 1.0}
    write_store(tmp_path / "b", **log2, kind="dense", dtype="fp32", source=SRC)
    v2 = publish(TokenStore.open(tmp_path / "b"), client)
    assert v2 == v1 + 1
    _same(reader.fetch_before(users, late, 16), before, "a reader keeps the version it opened")
    np.testing.assert_allclose(reader.refresh().fetch_before(users, late, 16).tokens[before.mask], before.tokens[before.mask] + 1.0)
    half = int(client.incr("iat:next_version"))  # a publish that died half-way: its keys, never live
    client.sadd("iat:versions", half)
    client.set(f"iat:{half}:u:0", "x")
    v4 = publish(TokenStore.open(tmp_path / "a"), client)
    assert not list(client.scan_iter(match=f"iat:{v1}:*")) and list(client.scan_iter(match=f"iat:{v2}:*"))  # the live one before stays
    assert not list(client.scan_iter(match=f"iat:{half}:*"))  # the half-written one is gone
    assert RedisTokenStore.open(client).version == v4


def test_acknowledged_ingests_survive_a_kill_of_the_writer(server, tmp_path) -> None:
    """A writer process ingests one row at a time and prints each acknowledged id; it is killed with SIGKILL
    mid-stream. Every id it printed is in the store (and readable), whatever was in flight."""
    client = server.client()
    client.flushall()
    log = _log()
    write_store(tmp_path / "s", **log, kind="dense", dtype="fp16", source=SRC)
    publish(TokenStore.open(tmp_path / "s"), client)
    script = textwrap.dedent(f"""
        import sys, numpy as np, redis
        from iat.tokens.online import RedisTokenStore
        store = RedisTokenStore.open(redis.Redis(host="127.0.0.1", port={server.port}))
        for i in range(100_000, 200_000):
            store.append(user_id=[i % 5], ts=[1_000 + i], instance_id=[i], domain=["ads"], item_id=[1], category=[1],
                         click=[1], conversion=None, conversion_ts=None, tokens=np.ones((1, 4), np.float32))
            print(i, flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parent.parent)
    acked = []
    for line in proc.stdout:  # type: ignore[union-attr]
        acked.append(int(line))
        if len(acked) == 300:
            proc.kill()
            break
    proc.wait()
    rest = proc.stdout.read() if proc.stdout else ""  # type: ignore[union-attr]
    acked += [int(x) for x in rest.split()]
    online = RedisTokenStore.open(client)
    assert len(acked) >= 300 and online.locate_instances(acked).all()
    h = online.fetch_before(np.array([acked[-1] % 5]), np.array([10**7]), 256)
    assert acked[-1] in set(h.instance_id[h.mask].tolist())


def test_iat_tokens_publish(server, tmp_path, capsys) -> None:
    from iatcli.main import main

    client = server.client()
    client.flushall()
    write_store(tmp_path / "s", **_log(), kind="dense", dtype="int8", source=SRC)
    assert main(["tokens", "publish", str(tmp_path / "s"), "--redis", server.url, "--retention", "10"]) == 0
    out = capsys.readouterr().out
    assert "as live version 1 under 'iat': 50 tokens, each user's last 10" in out, out
    online = RedisTokenStore.open(client)
    assert online.dtype == "int8" and online.meta.retention == 10 and online.source == SRC
