"""Property tests: fetch_before over random logs (ties in ts, several segments, label updates) equals a plain
Python reference and never leaks the future."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iat.tokens import CONVERSION_PAD, CONVERSION_UNKNOWN, TokenStore, append_segment, set_conversion, write_store

SRC = {"model": "t", "version": "1", "run_id": "r", "config_hash": "h"}
USERS = [3, 5, 8, 13]
UNKNOWN_USER = 99
NULL = None


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(0, 40))
    rows = []
    for iid in draw(st.permutations(range(1000, 1000 + n))):
        ts = draw(st.integers(0, 12))  # narrow range: many ties
        click = draw(st.integers(0, 1))
        conv = draw(st.sampled_from([NULL, 0, 1])) if click else NULL
        cts = NULL if conv is NULL and draw(st.booleans()) else ts + draw(st.integers(0, 8))
        rows.append({"user": draw(st.sampled_from(USERS)), "ts": ts, "iid": iid, "item": draw(st.integers(0, 5)),
                     "domain": draw(st.sampled_from(["a", "b"])), "click": click, "conv": conv, "cts": cts,
                     "part": draw(st.integers(0, 2))})  # fmt: skip
    updates = []
    if rows and draw(st.booleans()):
        for r in draw(st.lists(st.sampled_from(rows), max_size=4, unique_by=lambda r: r["iid"])):
            updates.append({"iid": r["iid"], "conv": draw(st.integers(0, 1)), "cts": r["ts"] + draw(st.integers(0, 6))})
    pool = USERS + [UNKNOWN_USER]
    requests = draw(st.lists(st.tuples(st.sampled_from(pool), st.integers(-1, 14)), min_size=1, max_size=12))
    # requests at exactly the ts of a logged instance of that user: it must not see itself
    requests += [(r["user"], r["ts"]) for r in rows[:5]]
    return {"rows": rows, "updates": updates, "requests": requests, "L": draw(st.integers(1, 6)),
            "dtype": draw(st.sampled_from(["fp32", "int8"]))}  # fmt: skip


def columns(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "user_id": np.array([r["user"] for r in rows], np.int64),
        "ts": np.array([r["ts"] for r in rows], np.int64),
        "instance_id": np.array([r["iid"] for r in rows], np.int64),
        "domain": [r["domain"] for r in rows],
        "item_id": np.array([r["item"] for r in rows], np.int64),
        "category": np.array([r["item"] % 3 for r in rows], np.int64),
        "click": np.array([r["click"] for r in rows], np.int64),
        "conversion": [np.nan if r["conv"] is NULL else r["conv"] for r in rows],
        "conversion_ts": [np.nan if r["cts"] is NULL else r["cts"] for r in rows],
        "tokens": np.array([token_of(r["iid"], r["ts"]) for r in rows], np.float32).reshape(len(rows), 2),
    }


def token_of(iid: int, ts: int) -> tuple[float, float]:
    """A token naming its row, so a gathered token can be checked against the row it came from.

    Values stay in [-1, 1] so int8 is exact whatever rows calibrate the scale (0 and +-1 are on the grid).
    """
    return (1.0 if iid % 2 else -1.0, 1.0 if ts % 2 else 0.0)


def build(root: Path, sc: dict[str, Any]) -> TokenStore:
    parts = [[r for r in sc["rows"] if r["part"] == p] for p in range(3)]
    write_store(root, **columns(parts[0]), kind="dense", dtype=sc["dtype"], source=SRC)
    for rows in parts[1:]:
        if rows:
            append_segment(root, **columns(rows), source=SRC)
    if sc["updates"]:
        u = sc["updates"]
        set_conversion(root, [x["iid"] for x in u], [x["cts"] for x in u], [x["conv"] for x in u])
    return TokenStore.open(root, verify="full")


def reference(sc: dict[str, Any], user: int, ts: int) -> list[dict[str, Any]]:
    """The obviously-correct answer: filter, sort, keep the last L, mask labels by what was known at ts."""
    latest = {u["iid"]: u for u in sc["updates"]}
    out = []
    for r in sorted(sc["rows"], key=lambda r: (r["ts"], r["iid"])):
        if r["user"] == user and r["ts"] < ts:
            conv, cts = (latest[r["iid"]]["conv"], latest[r["iid"]]["cts"]) if r["iid"] in latest else (r["conv"], r["cts"])
            known = cts is not NULL and cts < ts and conv is not NULL
            out.append({"iid": r["iid"], "ts": r["ts"], "item": r["item"], "domain": r["domain"],
                        "click": r["click"], "conv": conv if known else CONVERSION_UNKNOWN})  # fmt: skip
    return out[-sc["L"] :] if out else []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(scenarios())
def test_fetch_matches_reference_and_never_leaks(sc: dict[str, Any]) -> None:
    if not any(r["part"] == 0 for r in sc["rows"]):
        sc["dtype"] = "fp32"  # an empty int8 base has no rows to calibrate its scale on
    # tmpfs where there is one: each example fsyncs dozens of files, slow on a real disk
    tmp = Path(tempfile.mkdtemp(dir="/dev/shm" if Path("/dev/shm").is_dir() else None))
    try:
        store = build(tmp / "s", sc)
        req_u = np.array([u for u, _ in sc["requests"]], np.int64)
        req_t = np.array([t for _, t in sc["requests"]], np.int64)
        L = sc["L"]
        r = store.fetch_before(req_u, req_t, L)
    finally:
        shutil.rmtree(tmp)
    B = len(req_u)
    assert r.mask.shape == (B, L) and r.tokens.shape == (B, L, 2)
    domains = store.domains
    for b in range(B):
        want = reference(sc, int(req_u[b]), int(req_t[b]))
        pad = L - len(want)
        # left padding: the mask is False then True, and says exactly how many real tokens there are
        assert r.mask[b].tolist() == [False] * pad + [True] * len(want)
        got = r.mask[b]
        assert r.instance_id[b, got].tolist() == [w["iid"] for w in want]
        assert r.ts[b, got].tolist() == [w["ts"] for w in want]
        assert r.item_id[b, got].tolist() == [w["item"] for w in want]
        assert [domains[d] for d in r.domain[b, got]] == [w["domain"] for w in want]
        assert r.click[b, got].tolist() == [w["click"] for w in want]
        assert r.conversion[b, got].tolist() == [w["conv"] for w in want]
        assert r.time_gap[b, got].tolist() == [int(req_t[b]) - w["ts"] for w in want]
        # no future: every real token is strictly before the request; the request's own instance is not there
        assert (r.ts[b, got] < req_t[b]).all()
        own = [x["iid"] for x in sc["rows"] if x["user"] == req_u[b] and x["ts"] == req_t[b]]
        assert not set(own) & set(r.instance_id[b, got].tolist())
        # tokens really are the rows named by instance_id
        want_tokens = [token_of(w["iid"], w["ts"]) for w in want]
        np.testing.assert_array_equal(r.tokens[b, got], np.array(want_tokens, np.float32).reshape(-1, 2))
        # padding is padding in every field
        assert (r.tokens[b, ~got] == 0).all() and (r.click[b, ~got] == -1).all()
        assert (r.conversion[b, ~got] == CONVERSION_PAD).all() and (r.time_gap[b, ~got] == 0).all()
        if req_u[b] == UNKNOWN_USER:
            assert not got.any()
