"""The real BentoML service over HTTP on 127.0.0.1: rank, ingest-then-rank, delayed label, health, metrics,
parity with offline scoring, and a table of malformed requests that must each get a clear 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest

from serving.api_models import MAX_CANDIDATES
from tests._serving import Service, built, instance_of, offline_scores, query_of


@pytest.fixture(scope="module")
def b():
    return built()


@pytest.fixture(scope="module")
def svc(b, tmp_path_factory):
    s = Service({"IAT_SERVING_PACKAGE": str(b.package), "IAT_TOKEN_STORE": str(tmp_path_factory.mktemp("svc") / "live")})
    try:
        s.wait_ready()
        yield s
    finally:
        s.stop()


def _rank(svc, q):
    r = svc.client.post("/rank", json=q)
    assert r.status_code == 200, r.text
    return r.json()


def test_http_scores_equal_offline_scores(b, svc):
    rows = b.df[b.df["split"] == "test"].iloc[:40]
    offline = offline_scores(b, rows)
    served = [_rank(svc, query_of(r, b.schema)) for _, r in rows.iterrows()]
    p = np.array([s["scores"][0]["p_ctr"] for s in served])
    pc = np.array([s["scores"][0]["p_cvr"] for s in served])
    np.testing.assert_allclose(p, offline["p"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(pc, offline["p_conv"], rtol=0, atol=1e-6)
    assert {s["model_version"] for s in served} == {b.ranker.config["version"]}


def test_rank_many_candidates_and_default_ts(b, svc):
    row = b.df.iloc[-1]
    q = query_of(row, b.schema, extra_items=b.df.iloc[:98])
    q["candidates"].append({"item_id": 10**15})  # an item never seen, without features: OOV everywhere
    q.pop("ts")  # default: now, after every logged instance: the user's full history
    out = _rank(svc, q)
    assert [s["item_id"] for s in out["scores"]] == [c["item_id"] for c in q["candidates"]]
    assert len(out["scores"]) == 100 and out["history_tokens"] == b.ranker.spec.L
    assert all(0 < s["p_ctr"] < 1 and 0 < s["p_cvr"] < 1 for s in out["scores"])
    assert len({round(s["p_ctr"], 9) for s in out["scores"]}) > 1


def test_ingest_then_rank_sees_the_new_instance(b, svc):
    row = b.df.iloc[-5]
    user, ts = 7 * 10**12, int(b.df["ts"].max()) + 100
    q = dict(query_of(row, b.schema), user_id=user, ts=ts + 1)
    before = _rank(svc, q)
    rows_before = svc.client.post("/info", json={}).json()["store"]["rows"]
    r = svc.client.post("/ingest", json=instance_of(row, b.schema, instance_id=7 * 10**9, user_id=user, ts=ts, click=1))
    assert r.status_code == 200, r.text
    after = _rank(svc, q)
    assert (before["history_tokens"], after["history_tokens"]) == (0, 1)
    assert (before["history_clicks"], after["history_clicks"]) == (0, 1)
    assert after["scores"][0]["p_ctr"] != pytest.approx(before["scores"][0]["p_ctr"], abs=1e-7)
    assert r.json()["store_rows"] == rows_before + 1 == svc.client.post("/info", json={}).json()["store"]["rows"]
    dup = svc.client.post("/ingest", json=instance_of(row, b.schema, instance_id=7 * 10**9, user_id=user, ts=ts))
    assert dup.status_code == 409 and "already in the token store" in dup.text


def test_delayed_label_changes_later_scores_only(b, svc):
    row = b.df.iloc[-6]
    user, ts = 8 * 10**12, int(b.df["ts"].max()) + 100
    assert svc.client.post("/ingest", json=instance_of(row, b.schema, instance_id=8 * 10**9, user_id=user, ts=ts, click=1)).status_code == 200
    early, late = (dict(query_of(row, b.schema), user_id=user, ts=ts + d) for d in (50, 500))
    e0, l0 = (_rank(svc, q)["scores"][0]["p_ctr"] for q in (early, late))
    r = svc.client.post("/label", json={"instance_id": 8 * 10**9, "conversion_ts": ts + 100})
    assert r.status_code == 200, r.text
    e1, l1 = (_rank(svc, q)["scores"][0]["p_ctr"] for q in (early, late))
    assert e1 == pytest.approx(e0, abs=1e-7) and l1 != pytest.approx(l0, abs=1e-7)
    assert svc.client.post("/label", json={"instance_id": 9 * 10**9, "conversion_ts": ts}).status_code == 404


def test_health_readiness_and_metrics(svc):
    assert svc.client.get("/livez").status_code == 200
    assert svc.client.get("/readyz").status_code == 200
    m = svc.client.get("/metrics")
    assert m.status_code == 200
    for name in ("iat_ingested_instances_total", "iat_rank_candidates_bucket", "iat_history_tokens_bucket", "bentoml_request_total"):
        assert name in m.text, name


def _good(b):
    return query_of(b.df.iloc[-1], b.schema)


BAD = [
    # (endpoint, body builder (b -> json-able or bytes), the field the answer must name)
    ("rank", lambda b: {}, "user_id"),
    ("rank", lambda b: {k: v for k, v in _good(b).items() if k != "candidates"}, "candidates"),
    ("rank", lambda b: {**_good(b), "user_id": "u-17"}, "user_id"),
    ("rank", lambda b: {**_good(b), "user_id": True}, "user_id"),
    ("rank", lambda b: {**_good(b), "ts": 1.5}, "ts"),
    ("rank", lambda b: {**_good(b), "candidates": "all"}, "candidates"),
    ("rank", lambda b: {**_good(b), "candidates": [{"item_id": 1}] * (MAX_CANDIDATES + 1)}, "candidates"),
    ("rank", lambda b: {**_good(b), "candidates": []}, "candidates"),
    ("rank", lambda b: {**_good(b), "domain": "d" * 1_000_000}, "domain"),
    ("rank", lambda b: {**_good(b), "context": {"device": "x" * 1_000_000}}, "device"),
    ("rank", lambda b: {**_good(b), "context": {"k" * 10_000: 1}}, "context"),
    ("rank", lambda b: json.dumps({**_good(b), "context": {"price_bucket": float("nan")}}).encode(), "price_bucket"),
    ("rank", lambda b: json.dumps({**_good(b), "context": {"u_prior_ctr": float("inf")}}).encode(), "u_prior_ctr"),
    ("rank", lambda b: {**_good(b), "ts": -1}, "ts"),
    ("rank", lambda b: {**_good(b), "ts": 1_700_000_000_000}, "ts"),  # milliseconds, not seconds
    ("rank", lambda b: {**_good(b), "context": {"hour": [1, 2]}}, "hour"),
    ("rank", lambda b: {**_good(b), "context": {"no_such_feature": 1}}, "no_such_feature"),
    ("rank", lambda b: {**_good(b), "candidates": [{"item_id": 1, "features": {"price": "cheap"}}]}, "price"),
    ("rank", lambda b: {**_good(b), "candidates": [{"item_id": 1, "features": {"hour": 3}}]}, "hour"),
    ("rank", lambda b: {**_good(b), "surprise": 1}, "surprise"),
    ("rank", lambda b: {**_good(b), "context": {}, "candidates": [{"item_id": 1}, {"item_id": 2, "features": {}}]}, "names no feature"),
    ("rank", lambda b: b"{this is not json", "json"),
    ("rank", lambda b: b"", "user_id"),
    ("ingest", lambda b: {**instance_of(b.df.iloc[0], b.schema), "click": 2}, "click"),
    ("ingest", lambda b: {**instance_of(b.df.iloc[0], b.schema), "click": 0, "conversion": 1}, "conversion"),
    ("ingest", lambda b: {k: v for k, v in instance_of(b.df.iloc[0], b.schema).items() if k != "instance_id"}, "instance_id"),
    ("ingest", lambda b: {**instance_of(b.df.iloc[0], b.schema), "ts": -5}, "ts"),
    ("label", lambda b: {"instance_id": 1, "conversion_ts": -1}, "conversion_ts"),
    ("label", lambda b: {"instance_id": "one", "conversion_ts": 1}, "instance_id"),
    ("label", lambda b: {"instance_id": 1, "conversion_ts": 2_000_000_000, "conversion": 3}, "conversion"),
]


@pytest.mark.parametrize("endpoint, body, field", BAD, ids=[f"{e}-{f}-{i}" for i, (e, _, f) in enumerate(BAD)])
def test_malformed_requests_get_a_4xx_naming_the_field(b, svc, endpoint, body, field):
    data = body(b)
    if isinstance(data, bytes):
        r = svc.client.post(f"/{endpoint}", content=data, headers={"content-type": "application/json"})
    else:
        r = svc.client.post(f"/{endpoint}", json=data)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert field.lower() in r.text.lower(), r.text[:500]
    assert len(r.text) < 20_000  # the answer does not echo a huge input back


def test_wrong_method_and_route_are_4xx(svc):
    assert svc.client.get("/rank").status_code == 405
    assert svc.client.post("/nowhere", json={}).status_code == 404
    assert svc.client.post("/score_batch", json=[]).status_code == 404  # no public batch route past /rank's checks


def test_oversized_bodies_are_refused_with_413_before_they_are_read(b, svc):
    """Above IAT_MAX_BODY_BYTES (default 4 MiB): 413 naming the limit, whether the size is declared or not."""
    big = json.dumps({**_good(b), "context": {"device": "x" * (5 * 2**20)}}).encode()
    r = svc.client.post("/rank", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "exceeds the limit of 4,194,304 bytes" in r.json()["error"]

    def chunks():  # no Content-Length: the limit counts the bytes as they arrive
        for i in range(0, len(big), 2**16):
            yield big[i : i + 2**16]

    r = svc.client.post("/rank", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "IAT_MAX_BODY_BYTES" in r.text
    assert _rank(svc, _good(b))["history_tokens"] > 0  # and the next request is served


def test_body_limit_setting_errors_are_clear(monkeypatch):
    from serving.limits import DEFAULT_MAX_BODY_BYTES, max_body_bytes

    monkeypatch.delenv("IAT_MAX_BODY_BYTES", raising=False)
    assert max_body_bytes() == DEFAULT_MAX_BODY_BYTES
    monkeypatch.setenv("IAT_MAX_BODY_BYTES", "65536")
    assert max_body_bytes() == 65536
    for bad, msg in (("4MB", "whole number of bytes"), ("10", "below the 1024")):
        monkeypatch.setenv("IAT_MAX_BODY_BYTES", bad)
        with pytest.raises(ValueError, match=msg):
            max_body_bytes()


def test_service_keeps_serving_after_bad_requests(b, svc):
    """Runs after the malformed-request table (file order): the same process still answers."""
    assert svc.alive()
    out = _rank(svc, _good(b))
    assert out["history_tokens"] > 0
    assert "status=400" in svc.logs(full=True) and "status=500" not in svc.logs(full=True)  # access log: no server error


def test_the_documented_request_bodies_work_as_written(svc):
    """deploy/README.md's curl bodies for /rank, /ingest, /label and /info, posted as written."""
    import re
    from pathlib import Path

    doc = (Path(__file__).parent.parent / "deploy" / "README.md").read_text()
    calls = re.findall(r"curl -s -X POST \$URL/(\w+) -H 'content-type: application/json' -d '(.*?)'", doc, flags=re.S)
    assert [route for route, _ in calls] == ["rank", "ingest", "label", "info"]
    answers = {}
    for route, body in calls:
        r = svc.client.post(f"/{route}", json=json.loads(body))
        assert r.status_code == 200, (route, r.text)
        answers[route] = r.json()
    assert [s["item_id"] for s in answers["rank"]["scores"]] == [57, 91] and 0 < answers["rank"]["scores"][0]["p_ctr"] < 1
    assert answers["label"]["store_version"] > answers["ingest"]["store_version"]
