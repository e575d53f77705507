"""Downstream rankers learn from history and tokens, and the evaluation would catch a leaky history."""

from dataclasses import replace

import numpy as np
import pytest

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.downstream import DownstreamData, DownstreamSpec, load_ranker, save_ranker, train_downstream
from iat.history import HistoryAssembler
from iat.models.batching import HIST_INDEX, RowBatches
from iat.models.registry import train_source
from iat.tokens import TokenStore
from iat.tokens.materialize import materialize
from iat.train import TrainConfig, predict_all

CFG = TrainConfig(epochs=2, batch_size=256, threads=1, progress=False, patience=1)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("downstream")
    df, schema = generate(300, seed=12, progress=False)
    df = add_split(df)
    src_cfg = TrainConfig(epochs=2, threads=1, progress=False, batch_size=512)
    stores = {}
    for kind in ("user_order", "hgaq"):
        b = train_source(df, schema, kind, None, src_cfg, n_boot=0)
        stores[kind] = TokenStore.open(materialize(b, df, tmp / kind, progress=False))
        if kind == "hgaq":
            tokenizer = b.model
    data = DownstreamData.prepare(df, schema)
    # No history at all: the current row's user / item / context features, no cross (past-count) features.
    current_only = replace(schema, features=tuple(f for f in schema.features if f.group != "cross"))
    no_history = train_downstream(DownstreamData.prepare(df, current_only), DownstreamSpec("none", config={"seq": "none"}), None, CFG)
    no_history = no_history[1]["test"]["auc"]
    return data, stores, tokenizer, no_history, tmp


def _slow(spec: DownstreamSpec):
    return pytest.param(spec, marks=pytest.mark.slow, id=spec.name)


# One base, one +IAT and the SIF-Mixer run in CI; the other architectures with -m slow.
SPECS = [
    pytest.param(DownstreamSpec("base-din", config={"seq": "din"}), id="base-din"),
    _slow(DownstreamSpec("base-transformer", config={"seq": "transformer"})),
    _slow(DownstreamSpec("base-longer", config={"seq": "longer"})),
    _slow(DownstreamSpec("u-iat-din", config={"seq": "din", "iat": "din"}, tokens="user_order", L=16)),
    pytest.param(DownstreamSpec("u-iat-transformer", config={"seq": "din", "iat": "transformer"}, tokens="user_order", L=16), id="u-iat-transformer"),
    _slow(DownstreamSpec("u-iat-longer", config={"seq": "din", "iat": "longer"}, tokens="user_order", L=16)),
    pytest.param(DownstreamSpec("sif-mixer", "sif_mixer", {"blocks": 2}, tokens="hgaq", L=16), id="sif-mixer"),
]


@pytest.mark.parametrize("spec", SPECS)
def test_each_model_beats_a_no_history_model(setup, spec):
    data, stores, tokenizer, no_history, _ = setup
    _, m = train_downstream(data, spec, stores.get(spec.tokens) if spec.tokens else None, CFG, tokenizer)
    print(f"\n{spec.name}: test AUC {m['test']['auc']:.4f} vs no-history {no_history:.4f}")
    assert m["test"]["auc"] > no_history + 0.005


class LeakyStore:
    """Test-only: a store whose fetch sees one day past the request, so the request's own instance and its
    label leak in. Nothing in the product path can build one."""

    def __init__(self, store: TokenStore):
        self._s = store

    def __getattr__(self, name):
        return getattr(self._s, name)

    def fetch_before(self, user_ids, ts, L=256, decode_tokens=True):
        return self._s.fetch_before(user_ids, np.asarray(ts) + 86_400, L, decode_tokens)


def test_evaluation_catches_a_leaky_history(setup):
    data, stores, *_ = setup
    spec = DownstreamSpec("u-iat", config={"seq": "din", "iat": "transformer"}, tokens="user_order", L=16)
    clean = train_downstream(data, spec, stores["user_order"], CFG)[1]["test"]["auc"]
    leaky = train_downstream(data, spec, LeakyStore(stores["user_order"]), CFG)[1]["test"]["auc"]
    print(f"\nleak-free test AUC {clean:.4f}, leaky {leaky:.4f}")
    assert leaky > clean + 0.02


def test_product_histories_never_hold_the_request_or_later(setup):
    data, stores, *_ = setup
    test_rows = np.flatnonzero(data.split == "test")
    frame = data.encoder.transform(data.df.iloc[test_rows])
    asm = HistoryAssembler(data.encoder, stores["user_order"], data.clicks, L=64, base_L=32)
    calls = []
    fetch = stores["user_order"].fetch_before

    def spy(u, ts, L, decode_tokens=True):
        r = fetch(u, ts, L, decode_tokens)
        calls.append((np.asarray(ts), r))
        return r

    stores["user_order"].fetch_before = spy
    try:
        b = asm.batch(frame)
    finally:
        del stores["user_order"].fetch_before
    assert len(calls) == 1
    ts, r = calls[0]
    index = b[HIST_INDEX].numpy()  # one fetch per distinct (user, ts): row i reads history index[i]
    assert len(ts) == len(np.unique(np.stack([frame.user_id, frame.ts]), axis=1).T) < len(frame)  # sessions share
    assert (ts[index] == frame.ts).all()
    assert (r.ts[r.mask] < np.broadcast_to(ts[:, None], r.mask.shape)[r.mask]).all()
    own = r.instance_id[index] == frame.instance_id[:, None]
    assert not (own & r.mask[index]).any(), "a request never sees its own instance"
    assert (b["seq_gap"][b["seq_mask"]] > 0).all()


def test_ranker_bundle_round_trip(setup):
    data, stores, *_, tmp = setup
    spec = DownstreamSpec("u-iat", config={"seq": "din", "iat": "longer"}, tokens="user_order", L=16)
    bundle, _ = train_downstream(data, spec, stores["user_order"], TrainConfig(epochs=1, threads=1, progress=False))
    back = load_ranker(save_ranker(bundle, tmp / "ranker"))
    asm = HistoryAssembler(data.encoder, stores["user_order"], data.clicks, L=16, base_L=32)
    src = RowBatches(data.encoder.transform(data.df[data.split == "test"]), 512, assemble=asm.batch)
    np.testing.assert_allclose(predict_all(bundle.model, src)["p"], predict_all(back.model, src)["p"], rtol=0, atol=1e-6)
    assert back.config["token_source"] == stores["user_order"].source


def test_token_hour_and_weekday_side_info():
    from iat.history import hour_and_weekday

    ts = np.array([[0, 1_767_225_600 + 13 * 3600 + 59], [86_400 * 4, 5]])  # 1970-01-01 (Thu) 00:00; 2026-01-01 (Thu) 13:00
    mask = np.array([[True, True], [True, False]])
    hour, weekday = hour_and_weekday(ts, mask)
    assert hour.tolist() == [[1, 14], [1, 0]]  # 1..24, 0 = padding
    assert weekday.tolist() == [[4, 4], [1, 0]]  # Monday = 1; 1970-01-05 was a Monday
