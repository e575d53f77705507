"""Transfer evaluation (iat/transfer.py): what each source may see, what each ranker may read, the table."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import iat.transfer as tr
from iat.data.split import add_split
from iat.downstream import DownstreamData
from iat.history import HistoryAssembler
from iat.metrics import mean_ci
from iat.models.batching import expand_histories
from iat.models.ranker import Ranker
from iat.tokens.materialize import materialize
from iat.tokens.store import TokenStore

FAST_SOURCE = {"epochs": 1, "batch_size": 512}
FAST = {"epochs": 1, "batch_size": 512}
SMALL_RANKER = {"seq": "din", "iat": "din", "hidden": [64, 32]}


@pytest.fixture(scope="module")
def log(small_log):
    df, schema = small_log
    return add_split(df), schema


def _cfg(**kw):
    base = {"source_domain": "ads", "target_domains": ["mall"], "source_train": FAST_SOURCE, "train": FAST, "L": 8, "base_L": 8, "seeds": [0]}
    return tr.TransferConfig.from_dict({**base, **kw})


def test_plan_names_bases_and_settings(log):
    df, _ = log
    sources, jobs = tr.plan(tr.TransferConfig.from_dict({"source_domain": "ads"}), df)
    assert [s.name for s in sources] == ["ads", "live", "mall", "ads-first-50pct", "ads-click-only"]
    assert all(s.domain == "ads" for s in sources if s.name.startswith("ads"))
    names = [j.name for j in jobs]
    assert len(set(names)) == len(names)
    by_name = {j.name: j for j in jobs}
    for i, j in enumerate(jobs):
        b = by_name[j.base]
        assert names.index(b.name) <= i and b.source is None and (b.domain, b.task) == (j.domain, j.task)
    # cross-domain: in each target, base / ads tokens / own-domain tokens / the zeroed-token control
    for t in ("mall", "live"):
        got = {(j.source, j.token_input) for j in jobs if j.domain == t}
        assert got == {(None, True), ("ads", True), (t, True), ("ads", False)}
    assert {j.source for j in jobs if j.task == "conversion"} == {None, "ads", "ads-click-only"}
    # no conversion labels (MovieLens): no task transfer, no click-only source
    sources, jobs = tr.plan(tr.TransferConfig.from_dict({"source_domain": "ads", "controls": False}), df.drop(columns=["conversion"]))
    assert "ads-click-only" not in {s.name for s in sources} and all(j.task == "click" for j in jobs)
    with pytest.raises(ValueError, match="cannot also be a target"):
        tr.plan(tr.TransferConfig.from_dict({"source_domain": "ads", "target_domains": ["ads"]}), df)
    with pytest.raises(ValueError, match="not in the log"):
        tr.plan(tr.TransferConfig.from_dict({"source_domain": "shop"}), df)
    with pytest.raises(ValueError, match="unknown keys"):
        tr.TransferConfig.from_dict({"sources": "ads"})


def test_period_split_sees_only_the_early_stretch(log):
    df, _ = log
    rows = df[df["domain"] == "ads"].reset_index(drop=True)
    split = tr.period_split(rows, 0.5).to_numpy()
    orig, ts = rows["split"].to_numpy(), rows["ts"].to_numpy()
    lo, hi = ts[orig == "train"].min(), ts[orig == "train"].max()
    assert set(split) == {"train", "valid", "test", "later"}
    assert np.array_equal(split == "test", orig == "test")
    assert (orig[np.isin(split, ("train", "valid"))] == "train").all()
    assert ts[split == "train"].max() < ts[split == "valid"].min()
    assert ts[split == "valid"].max() < lo + 0.5 * (hi - lo) <= ts[(split == "later") & (orig == "train")].min()


@pytest.fixture(scope="module")
def cross_source(log, tmp_path_factory, request):
    """The ads source (trained through a spy that records the rows it got) and its token store."""
    df, schema = log
    seen = []
    real = tr.train_source

    def spy(rows, *a, **kw):
        seen.append(rows.copy())
        return real(rows, *a, **kw)

    mp = pytest.MonkeyPatch()
    mp.setattr(tr, "train_source", spy)
    try:
        bundle = tr.train_transfer_source(df, schema, tr.SourcePlan("ads", "ads"), _cfg())
    finally:
        mp.undo()
    path = tmp_path_factory.mktemp("transfer") / "ads-store"
    materialize(bundle, tr.store_rows(df, tr.SourcePlan("ads", "ads")), path, progress=False)
    return bundle, TokenStore.open(path), seen


def test_cross_domain_source_only_ever_saw_source_domain_rows(log, cross_source):
    df, _ = log
    bundle, store, seen = cross_source
    assert len(seen) == 1 and set(seen[0]["domain"]) == {"ads"}
    ads_train = df[(df["domain"] == "ads") & (df["split"] == "train")]
    assert (seen[0]["split"] == "train").sum() == len(ads_train)
    assert bundle.encoder.vocabs["domain"] == ["ads"]  # the encoder is fitted on exactly the rows trained on
    assert set(bundle.encoder.vocabs["item_id"]) <= set(ads_train["item_id"])
    assert bundle.metrics["trained_on"]["domains"] == ["ads"] and bundle.metrics["trained_on"]["train_rows"] == len(ads_train)
    assert store.domains == ["ads"] and store.rows == int((df["domain"] == "ads").sum())


def test_cross_domain_fetch_reads_only_earlier_source_domain_instances(log, cross_source):
    df, schema = log
    _, store, _ = cross_source
    L = 8
    mall = tr.target_rows(df, "mall", "ads", shared_users=True)
    ads = df[df["domain"] == "ads"]
    assert set(mall["user_id"]) <= set(ads["user_id"])
    assert len(tr.target_rows(df, "mall", "ads", shared_users=False)) == int((df["domain"] == "mall").sum())
    req = mall.sample(300, random_state=0)
    h = store.fetch_before(req["user_id"].to_numpy(), req["ts"].to_numpy(), L)
    assert h.mask.any()
    assert set(h.instance_id[h.mask]) <= set(ads["instance_id"])
    assert (h.ts[h.mask] < np.broadcast_to(req["ts"].to_numpy()[:, None], h.mask.shape)[h.mask]).all()
    by_user = {u: g.sort_values(["ts", "instance_id"]) for u, g in ads.groupby("user_id")}
    for k, (u, t) in enumerate(zip(req["user_id"], req["ts"])):
        g = by_user.get(u)
        want = [] if g is None else g.loc[g["ts"] < t, "instance_id"].to_numpy()[-L:].tolist()
        assert h.instance_id[k][h.mask[k]].tolist() == want
    # the downstream ranker of mall reads exactly those tokens through its HistoryAssembler
    data = DownstreamData.prepare(mall, schema)
    frame = data.encoder.transform(req)
    b = expand_histories(HistoryAssembler(data.encoder, store, data.clicks, L=L, base_L=L).batch(frame))
    assert torch.equal(b["tok_mask"], torch.from_numpy(h.mask))
    np.testing.assert_allclose(b["tok"].numpy(), h.tokens, rtol=0, atol=0)


def test_zeroed_token_control_reads_side_info_but_not_token_content(log, cross_source):
    df, schema = log
    _, store, _ = cross_source
    mall = tr.target_rows(df, "mall", "ads", shared_users=True)
    data = DownstreamData.prepare(mall, schema)
    b = HistoryAssembler(data.encoder, store, data.clicks, L=8, base_L=8).batch(data.encoder.transform(mall.iloc[:64]))
    other = {**b, "tok": torch.randn_like(b["tok"])}
    for token_input, same in ((False, True), (True, False)):
        torch.manual_seed(0)
        m = Ranker(data.encoder, {"seq": "din", "iat": "transformer", "token_dim": 64, "token_input": token_input}).eval()
        with torch.no_grad():
            p1, p2 = m.predict(b)["p"], m.predict(other)["p"]
        assert torch.allclose(p1, p2) == same
    with torch.no_grad():  # the side info still counts: change the labels of the fetched instances
        flipped = {**b, "tok_click": torch.where(b["tok_mask"], 3 - b["tok_click"], b["tok_click"])}
        torch.manual_seed(0)
        m = Ranker(data.encoder, {"seq": "din", "iat": "transformer", "token_dim": 64, "token_input": False}).eval()
        assert not torch.allclose(m.predict(b)["p"], m.predict(flipped)["p"])


def test_run_transfer_table_resume_and_provenance(log, tmp_path, monkeypatch):
    df, schema = log
    work = tmp_path / "work"
    cfg = dict(source_domain="ads", target_domains=["mall"], source_train=FAST_SOURCE, train=FAST, L=8, base_L=8, seeds=[0], ranker=SMALL_RANKER)
    r0 = tr.run_transfer(df, schema, cfg, work, log=None)
    _, jobs = tr.plan(tr.TransferConfig.from_dict(cfg), df)
    assert len(r0.results) == 2 * len(jobs)  # valid + test per job

    calls = []
    real = tr.train_downstream
    monkeypatch.setattr(tr, "train_downstream", lambda *a, **kw: calls.append(a[1].name) or real(*a, **kw))
    r = tr.run_transfer(df, schema, {**cfg, "seeds": [0, 1]}, work, log=None)
    assert sorted(calls) == sorted(j.name for j in jobs)  # only seed 1 was trained; seed 0 was resumed from disk

    # the table: one row per job, in plan order, with paired relative deltas vs the base over both seeds
    assert r.table["model"].tolist() == [j.name for j in jobs]
    assert (r.table["seeds"] == 2).all()
    test = r.results[r.results["split"] == "test"].set_index(["spec", "seed"])
    cross = "mall: +ads tokens (cross-domain)"
    rel = 100 * (test.loc[cross, "auc"] - test.loc["mall: base (no tokens)", "auc"]) / test.loc["mall: base (no tokens)", "auc"]
    row = r.table.set_index("model").loc[cross]
    assert row["d_auc"] == pytest.approx(mean_ci(rel.to_numpy()))
    assert pd.isna(r.table.set_index("model").loc["mall: base (no tokens)", "d_auc"])
    flat = r.flat()
    assert flat.loc[flat["model"] == cross, "d_auc_lo"].iloc[0] == pytest.approx(row["d_auc"][1])
    assert all(j.name in r.markdown for j in jobs) and "Cross-domain" in r.markdown and "another task" in r.markdown
    assert (work / "table.md").read_text() == r.markdown

    # conversion rows are scored on clicked test rows only; click rows on every test row of their domain
    ads_test = df[(df["domain"] == "ads") & (df["split"] == "test")]
    n = r.results[(r.results["split"] == "test") & (r.results["seed"] == 0)].set_index("spec")["n"]
    assert n["ads CVR: base (no tokens)"] == int(ads_test["conversion"].notna().sum()) == int(ads_test["click"].sum())
    assert n["ads: base (no tokens)"] == len(ads_test)
    assert n["mall: base (no tokens)"] == len(tr.target_rows(df, "mall", "ads", True).query("split == 'test'"))

    # what each source saw
    def saw(name):
        return json.loads((work / "sources" / name / "metrics.json").read_text())["trained_on"]

    assert saw("mall")["domains"] == ["mall"] and saw("ads")["domains"] == ["ads"]
    early = saw("ads-first-50pct")
    assert early["last_ts_seen"] < df.loc[(df["domain"] == "ads") & (df["split"] == "train"), "ts"].max()
    assert json.loads((work / "sources" / "ads-click-only" / "config.json").read_text())["model"]["conversion_weight"] == 0.0
    assert json.loads((work / "sources" / "ads" / "config.json").read_text())["model"]["conversion_weight"] == 1.0

    # nothing left to train: a third run only reads the results
    monkeypatch.setattr(tr, "train_downstream", lambda *a, **kw: pytest.fail("a finished job was trained again"))
    again = tr.run_transfer(df, schema, {**cfg, "seeds": [0, 1]}, work, log=None)
    assert again.markdown == r.markdown
    with pytest.raises(ValueError, match="another config"):
        tr.run_transfer(df, schema, {**cfg, "L": 16}, work, log=None)


def test_transfer_params_from_a_config_section():
    from iatcli.runs import transfer_params

    p = transfer_params({"dataset": "synthetic", "users": 100, "seed": 3, "model": "user_order", "epochs": 1, "L": 8, "source_domain": "ads"})
    assert p == {"dataset": "synthetic", "users": 100, "seed": 3, "config": {"source_kind": "user_order", "train": {"epochs": 1}, "L": 8, "source_domain": "ads"}}
    with pytest.raises(ValueError, match="unknown keys"):
        transfer_params({"dataset": "synthetic", "n_seeds": 3})
