"""The framework-free serving core: parity with offline scoring, request rows, ingest / label, store views."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from iat.history import ClickIndex
from iat.models.batching import HIST_INDEX, expand_histories
from iat.serving_core import ConflictError, NotFoundError, RequestError, ServingCore, _with_click
from iat.serving_package import read_package, snapshot_store, write_package
from iat.tokens import SourceMismatchError, TokenStore
from tests._serving import built, instance_of, offline_scores, query_of


@pytest.fixture(scope="module")
def b():
    return built()


@pytest.fixture
def core(b, tmp_path):
    """A core over a fresh copy of the package's store (tests write to it)."""
    return ServingCore.load(b.package, store=tmp_path / "live")


def _test_rows(b, n=200):
    return b.df[b.df["split"] == "test"].iloc[:n]


def test_core_scores_equal_offline_scores(b, core):
    """Parity: requests built from logged rows score exactly as train_downstream's model scores those rows."""
    rows = _test_rows(b)
    offline = offline_scores(b, rows)
    served = core.score_queries([query_of(r, b.schema) for _, r in rows.iterrows()])
    np.testing.assert_allclose(np.concatenate([s.p_ctr for s in served]), offline["p"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(np.concatenate([s.p_cvr for s in served]), offline["p_conv"], rtol=0, atol=1e-6)
    assert max(int(s.tokens[0]) for s in served) == b.ranker.spec.L  # histories were really read


def test_batched_queries_score_as_single_ones(b, core):
    rows = _test_rows(b, 6)
    qs = [query_of(r, b.schema, extra_items=b.df.iloc[100 * i : 100 * i + i]) for i, (_, r) in enumerate(rows.iterrows())]
    together = core.score_queries(qs)
    for q, s in zip(qs, together):
        alone = core.rank(q["user_id"], q["ts"], q["context"], q["candidates"], q["domain"])
        assert len(s.p_ctr) == len(q["candidates"])
        np.testing.assert_allclose(s.p_ctr, alone.p_ctr, atol=1e-6)


def test_a_request_reads_one_history_and_scores_as_per_row_histories(b, core):
    """Candidates of one request share one fetched history (one row per (user, ts)); each candidate's history
    equals the one fetched for it alone, and the scores equal those of the batch with a history per row."""
    q = query_of(_test_rows(b, 1).iloc[0], b.schema, extra_items=b.df.iloc[:30])
    frame = b.ranker.encoder.transform(core.query_frame([q]))
    view = core.view()
    shared = view.assembler.batch(frame)
    assert shared["tok"].shape[0] == 1 and shared[HIST_INDEX].tolist() == [0] * len(frame) > []
    alone = view.assembler.histories(frame.user_id, frame.ts)  # one fetch per row
    per_row = expand_histories(shared)
    assert HIST_INDEX not in per_row and set(alone) <= set(per_row) and "tok" in alone
    for k, v in alone.items():
        assert torch.equal(per_row[k].nan_to_num(-9), v.nan_to_num(-9)), k  # conversion is NaN: no label
    model = b.ranker.model.eval()
    got, ref = model.predict(shared), model.predict(per_row)
    assert shared["tok_mask"].sum() > 0
    torch.testing.assert_close(got["p"], ref["p"], rtol=0, atol=1e-6)
    torch.testing.assert_close(got["p_conv"], ref["p_conv"], rtol=0, atol=1e-6)


def test_missing_features_are_oov_and_zero(b, core):
    """An absent categorical = an unseen value (OOV); an absent numeric = a value at the train mean (z = 0)."""
    row = _test_rows(b, 1).iloc[0]
    q = query_of(row, b.schema)
    st = b.ranker.encoder.num_stats["price"]
    at_mean = float(np.sign(st["mean"]) * np.expm1(abs(st["mean"])))  # inverse of the signed log1p
    variants = []
    for device, price in ((None, None), (987654, at_mean)):
        v = json.loads(json.dumps(q))
        v["context"]["device"] = device
        v["candidates"][0]["features"]["price"] = price
        variants.append(core.score_queries([v])[0].p_ctr[0])
    full = core.score_queries([q])[0].p_ctr[0]
    assert variants[0] == pytest.approx(variants[1], abs=1e-6)
    assert variants[0] != pytest.approx(full, abs=1e-9)


def test_unknown_user_gets_an_empty_history(b, core):
    q = query_of(_test_rows(b, 1).iloc[0], b.schema)
    q["user_id"] = 10**15
    s = core.score_queries([q])[0]
    assert s.tokens[0] == 0 and s.clicks[0] == 0 and 0 < s.p_ctr[0] < 1


@pytest.mark.parametrize(
    "mutate, loc",
    [
        (lambda q: q["context"].update(nope=1), ("context", "nope")),
        (lambda q: q["context"].update(price=3.0), ("context", "price")),  # an item feature in the context
        (lambda q: q["candidates"][0]["features"].update(hour=3), ("candidates", 0, "features", "hour")),
        (lambda q: q["candidates"][0]["features"].update(price="cheap"), ("candidates", 0, "features", "price")),
        (lambda q: q["context"].update(user_id=3), ("context", "user_id")),
        (lambda q: q.update(candidates=[]), ("candidates",)),
    ],
)
def test_bad_queries_name_the_field(b, core, mutate, loc):
    q = query_of(_test_rows(b, 1).iloc[0], b.schema)
    mutate(q)
    with pytest.raises(RequestError) as e:
        core.score_queries([q])
    assert e.value.loc == loc and e.value.status == 400


def test_ingest_appends_the_source_models_token_and_the_next_rank_sees_it(b, core):
    row = b.df.iloc[-1]
    user, ts = 10**12, int(b.df["ts"].max()) + 10
    q = query_of(row, b.schema)
    q.update(user_id=user, ts=ts + 1)
    before = core.score_queries([q])[0]
    out = core.ingest(instance_of(row, b.schema, instance_id=10**9, user_id=user, ts=ts, click=1))
    after = core.score_queries([q])[0]
    assert (before.tokens[0], after.tokens[0]) == (0, 1)
    assert (before.clicks[0], after.clicks[0]) == (0, 1)
    assert after.p_ctr[0] != pytest.approx(before.p_ctr[0], abs=1e-7)
    assert out["store_rows"] == TokenStore.open(b.store).rows + 1
    # the appended token is what materialization stored for the same instance (same user and features)
    uid, t = int(row["user_id"]), int(row["ts"])
    core.ingest(instance_of(row, b.schema, instance_id=10**9 + 1, ts=t + 1))
    store = core.view().store
    h = store.fetch_before([uid, uid], [t + 2, t + 1], L=1)  # the newest token, and the one before it
    assert (h.instance_id[0, -1], h.instance_id[1, -1]) == (10**9 + 1, row["instance_id"])
    np.testing.assert_allclose(h.tokens[0, -1], h.tokens[1, -1], atol=1e-3)  # fp16 both ways
    with pytest.raises(ConflictError):
        core.ingest(instance_of(row, b.schema, instance_id=10**9, user_id=user, ts=ts))


def test_incremental_click_index_equals_a_rebuild(b, core):
    rows = b.df.sample(12, random_state=1)
    for i, (_, r) in enumerate(rows.iterrows()):
        core.ingest(instance_of(r, b.schema, instance_id=2 * 10**9 + i, ts=int(r["ts"]) + 7, click=i % 2))
    inc, full = core.view().clicks, ClickIndex.from_store(core.view().store)
    for k in ("users", "offsets", "ts", "item_id", "category"):
        np.testing.assert_array_equal(getattr(inc, k), getattr(full, k), err_msg=k)
    assert inc.max_len == full.max_len


def test_with_click_on_an_empty_index():
    empty = ClickIndex.from_rows(*(np.zeros(0, np.int64) for _ in range(6)))
    one = _with_click(empty, 5, 100, 7, 3)
    idx, mask = one.fetch(np.array([5, 6]), np.array([101, 101]), 2)
    assert mask.tolist() == [[False, True], [False, False]] and one.item_id[idx[0, 1]] == 7


def test_delayed_label_is_seen_only_after_it_is_known(b, core):
    row = b.df.iloc[-2]
    user, ts = 10**12 + 1, int(b.df["ts"].max()) + 10
    core.ingest(instance_of(row, b.schema, instance_id=3 * 10**9, user_id=user, ts=ts, click=1))
    q = query_of(row, b.schema)
    early, late = dict(q, user_id=user, ts=ts + 50), dict(q, user_id=user, ts=ts + 500)
    e0, l0 = (core.score_queries([x])[0].p_ctr[0] for x in (early, late))
    core.label(3 * 10**9, conversion_ts=ts + 100)
    e1, l1 = (core.score_queries([x])[0].p_ctr[0] for x in (early, late))
    assert e1 == pytest.approx(e0, abs=1e-7)  # a request before the label is known is not told about it
    assert l1 != pytest.approx(l0, abs=1e-7)
    with pytest.raises(NotFoundError):
        core.label(4 * 10**9, conversion_ts=ts)
    with pytest.raises(RequestError, match="precedes"):
        core.label(3 * 10**9, conversion_ts=ts - 1)


def test_bad_instances_are_refused(b, core):
    row = b.df.iloc[-3]
    for override, field in (
        ({"click": 0, "conversion": 1}, "conversion"),
        ({"click": 1, "conversion": 1, "conversion_ts": int(row["ts"]) - 5}, "conversion_ts"),
        ({"click": 2}, "click"),
    ):
        with pytest.raises(RequestError) as e:
            core.ingest(instance_of(row, b.schema, instance_id=5 * 10**9, **override))
        assert e.value.loc == (field,)
    assert core.view().store.rows == TokenStore.open(b.store).rows  # nothing was appended


def test_writes_of_another_process_are_picked_up_and_parts_are_compacted(b, tmp_path):
    a = ServingCore.load(b.package, store=tmp_path / "shared", max_parts=3)
    other = ServingCore.load(b.package, store=tmp_path / "shared", max_parts=3)
    rows = b.df.iloc[:5]
    for i, (_, r) in enumerate(rows.iterrows()):
        (a if i % 2 else other).ingest(instance_of(r, b.schema, instance_id=6 * 10**9 + i, ts=int(r["ts"]) + 1))
    for c in (a, other):
        v = c.view()
        assert v.store.rows == TokenStore.open(b.store).rows + 5
        assert len(v.store.parts) <= 3
        assert (v.store.locate_instances(6 * 10**9 + np.arange(5))[0] >= 0).all()
        full = ClickIndex.from_store(v.store)
        np.testing.assert_array_equal(v.clicks.ts, full.ts)


def test_package_refuses_a_store_of_another_source(b, tmp_path):
    other = tmp_path / "other"
    snapshot_store(b.store, other)
    m = json.loads((other / "manifest.json").read_text())
    m["source"]["version"] = "not-this-one"
    (other / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(SourceMismatchError, match="version"):
        write_package(tmp_path / "pkg", b.ranker, b.source, other)
    with pytest.raises(FileNotFoundError, match="package.json"):
        read_package(tmp_path)


def test_a_store_named_the_old_way_is_the_same_source_and_post_sit_tokens_are_not(b, tmp_path):
    """Stores made before model names carried the data set name their source iat-source-<kind>: the same weights
    (version, config hash), so they package; the post-SIT outputs of the same weights do not."""
    for name, model, ok in (("legacy", f"iat-source-{b.source.kind}", True), ("post", TokenStore.open(b.store).source["model"] + "-post-sit", False)):
        store = snapshot_store(b.store, tmp_path / name)
        m = json.loads((store / "manifest.json").read_text())
        m["source"]["model"] = model
        (store / "manifest.json").write_text(json.dumps(m))
        if ok:
            assert write_package(tmp_path / f"pkg-{name}", b.ranker, b.source, store).root.is_dir()
        else:
            with pytest.raises(SourceMismatchError, match="tokens='post-SIT' \\(expected 'pre-SIT'\\)"):
                write_package(tmp_path / f"pkg-{name}", b.ranker, b.source, store)


def test_load_seeds_a_new_store_and_refuses_a_foreign_folder(b, tmp_path):
    core = ServingCore.load(b.package, store=tmp_path / "a" / "live")
    assert core.view().store.rows == TokenStore.open(b.store).rows
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "x.txt").write_text("x")
    with pytest.raises(FileExistsError):
        ServingCore.load(b.package, store=junk)
    shutil.rmtree(tmp_path / "a")
