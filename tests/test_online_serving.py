"""Serving over the Redis online store: the same scores as over the file store, writes of one replica seen by
another (in process, and two real BentoML services on one redis-server), delayed labels, and a service killed
with SIGKILL under an ingest load loses no acknowledged ingest."""

from __future__ import annotations

import os
import signal
import threading

import numpy as np
import pytest

from iat.serving_core import ConflictError, NotFoundError, RequestError, ServingCore
from iat.tokens.online import RedisTokenStore
from iat.tokens.redis_server import RedisServer
from tests._serving import Service, built, instance_of, query_of


@pytest.fixture(scope="module")
def b():
    return built()


@pytest.fixture
def redis_url():
    with RedisServer() as s:
        yield s.url


def _rows(b, n):
    return b.df[b.df["split"] == "test"].iloc[:n]


def test_online_core_scores_as_the_file_core_and_replicas_share_writes(b, redis_url, tmp_path) -> None:
    file_core = ServingCore.load(b.package, store=tmp_path / "live")
    a = ServingCore.load(b.package, online=redis_url)  # seeds the empty Redis from the package's snapshot
    c = ServingCore.load(b.package, online=redis_url)  # a second replica: finds it published
    assert a.info()["store"]["version"] == c.info()["store"]["version"] == 1
    qs = [query_of(r, b.schema, extra_items=b.df.iloc[:5]) for _, r in _rows(b, 40).iterrows()]
    want = np.concatenate([s.p_ctr for s in file_core.score_queries(qs)])
    np.testing.assert_allclose(np.concatenate([s.p_ctr for s in a.score_queries(qs)]), want, rtol=0, atol=1e-6)

    # an ingest through replica a is in the next rank of replica c (token history and clicked items)
    row = b.df.iloc[-1]
    later = int(b.df["ts"].max()) + 10
    q = query_of(row, b.schema) | {"ts": later + 1}
    before = c.score_queries([q])[0]
    inst = instance_of(row, b.schema, instance_id=10**10, ts=later, click=1, domain="brand-new-domain")
    out = a.ingest(inst)
    assert out["store_rows"] == c.info()["store"]["rows"]
    after = c.score_queries([q])[0]
    assert int(after.tokens[0]) == min(int(before.tokens[0]) + 1, b.ranker.spec.L) and int(after.clicks[0]) >= int(before.clicks[0])
    assert not np.allclose(after.p_ctr, before.p_ctr)
    with pytest.raises(ConflictError):
        c.ingest(inst)  # the other replica refuses the same id
    # the same ingest into the file core gives the same scores
    file_core.ingest(inst)
    np.testing.assert_allclose(after.p_ctr, file_core.score_queries([q])[0].p_ctr, rtol=0, atol=1e-6)

    # delayed labels: checked as in the file core, visible once known
    with pytest.raises(NotFoundError):
        c.label(10**11, later + 5)
    with pytest.raises(RequestError, match="precedes"):
        c.label(10**10, later - 1)
    c.label(10**10, later + 5)
    h = RedisTokenStore.open(a.online.client).fetch_before([int(row["user_id"])], [later + 6], 4)
    assert h.conversion[0, -1] == 1


def test_two_services_on_one_redis_and_a_kill_loses_no_acknowledged_ingest(b, redis_url) -> None:
    env = {"IAT_SERVING_PACKAGE": str(b.package), "IAT_ONLINE_STORE": redis_url}
    one, two = Service(env), Service(env)
    try:
        one.wait_ready()
        two.wait_ready()
        row = b.df.iloc[-1]
        later = int(b.df["ts"].max()) + 100
        q = query_of(row, b.schema) | {"ts": later + 10**6}
        before = two.client.post("/rank", json=q).json()
        r = one.client.post("/ingest", json=instance_of(row, b.schema, instance_id=2 * 10**10, ts=later, click=1))
        assert r.status_code == 200, r.text
        after = two.client.post("/rank", json=q).json()
        assert after["history_clicks"] == before["history_clicks"] + 1, (before, after)

        # an ingest load on service one from 4 threads; kill -9 it mid-stream; every acknowledged id is stored
        acked: list[int] = []
        stop = threading.Event()

        def load(k: int) -> None:
            i = 0
            while not stop.is_set():
                iid = 3 * 10**10 + k * 10**6 + i
                try:
                    r = one.client.post("/ingest", json=instance_of(row, b.schema, instance_id=iid, ts=later + 1 + i, click=0))
                except Exception:  # noqa: BLE001 - the server is gone mid-request: not acknowledged
                    return
                if r.status_code == 200:
                    acked.append(iid)
                i += 1

        threads = [threading.Thread(target=load, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        while len(acked) < 100:
            threading.Event().wait(0.05)
        os.killpg(one.proc.pid, signal.SIGKILL)
        stop.set()
        for t in threads:
            t.join(30)
        store = RedisTokenStore.open(__import__("redis").Redis.from_url(redis_url))
        assert len(acked) >= 100 and store.locate_instances(acked).all(), f"{int((~store.locate_instances(acked)).sum())} lost"
        assert two.client.post("/rank", json=q).status_code == 200  # the other replica serves on
    finally:
        one.stop()
        two.stop()
