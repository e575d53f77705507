"""Sequence modules compute only what is read, exactly: the query slot of the last Transformer / LONGER block, DIN's
query term once per row, a history's side once per history and the ranker's projected side-info tables give the
numbers of the full computation (to float rounding). The full computation is ``bench/reference_compute.py``, the
"before" of the speed benches."""

from __future__ import annotations

import pytest
import torch

from bench.reference_compute import _longer_full as _full_longer
from bench.reference_compute import _transformer_full as _full_transformer
from iat.models.seq import DIN, LongerPool, TransformerPool


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    B, L, d = 32, 40, 32
    mask = torch.rand(B, L, generator=g) > 0.3
    mask[0] = False  # a request without history
    return torch.randn(B, d, generator=g), torch.randn(B, L, d, generator=g), mask


@pytest.mark.parametrize("layers", [1, 2])
def test_query_only_last_block_equals_the_full_computation(inputs, layers: int):
    q, s, mask = inputs
    torch.manual_seed(layers)
    for module, full in ((TransformerPool(32, layers=layers), _full_transformer), (LongerPool(32, layers=layers), _full_longer)):
        module.eval()
        with torch.no_grad():
            got, ref = module(q, s, mask), full(module, q, s, mask)
        assert (got - ref).abs().max() < 1e-5, type(module).__name__
        assert ref.abs().mean() > 0.1  # not a trivially zero output
        # the gradient path is the same too (training uses it)
        first = (module.blocks[0] if isinstance(module, TransformerPool) else module.cross).attn.in_proj_weight
        g1 = torch.autograd.grad(module(q, s, mask).sum(), first)[0]
        g2 = torch.autograd.grad(full(module, q, s, mask).sum(), first)[0]
        assert torch.allclose(g1, g2, atol=1e-5)


def test_din_split_first_layer_equals_the_concatenation(inputs):
    q, s, _ = inputs
    din = DIN(32)
    qe = q.unsqueeze(1).expand_as(s)
    ref = din.att(torch.cat([qe, s, qe - s, qe * s], dim=-1)).squeeze(-1)
    assert (din.scores(q, s) - ref).abs().max() < 1e-5


def test_label_attention_reads_the_labels_of_similar_past_instances():
    from iat.models.seq import LabelAttention

    torch.manual_seed(0)
    att = LabelAttention(8, heads=2, labels=1)
    with torch.no_grad():
        att.q.weight.copy_(torch.eye(8) * 100)
        att.k.weight.copy_(torch.eye(8))
        att.q.bias.zero_()
        att.k.bias.zero_()
        att.prior_score.fill_(-50.0)  # no pull towards the prior
    a, b = torch.zeros(8), torch.zeros(8)
    a[0], b[4] = 1.0, 1.0  # two kinds of past instance, one per head's subspace
    seq = torch.stack([a, a, b, b, b]).unsqueeze(0)
    labels = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0]).view(1, 5, 1)
    mask = torch.ones(1, 5, dtype=torch.bool)
    with torch.no_grad():
        out = att(a.unsqueeze(0), seq, mask, labels)
        empty = att(a.unsqueeze(0), seq, torch.zeros(1, 5, dtype=torch.bool), labels)
    assert out.shape == (1, att.out_dim) == (1, 4)
    assert out[0, 0].item() == pytest.approx(1.0, abs=1e-3)  # head 0 matches the query's kind: both of them were clicked
    assert out[0, 1].item() == pytest.approx(0.6, abs=1e-3)  # head 1 sees no match in its subspace: the plain click rate 3/5
    assert torch.isfinite(out).all()
    # without any history, a head answers its prior rate and a mass of 0
    assert empty[0, 0].item() == pytest.approx(0.5) and empty[0, 2:].abs().max() < 1e-6


@pytest.fixture(params=["four histories", "one history"])
def shared(request) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """12 queries over 4 histories (a request's candidates share one), in no particular order; or 12 queries over one
    history (one rank request: DIN's single-GEMM path)."""
    g = torch.Generator().manual_seed(1)
    H, L, d = (4, 24, 32) if request.param == "four histories" else (1, 24, 32)
    mask = torch.rand(H, L, generator=g) > 0.3
    if H > 1:
        mask[1] = False  # a history-less request
    index = torch.tensor([2, 0, 0, 3, 1, 2, 2, 3, 0, 1, 3, 2]) if H > 1 else torch.zeros(12, dtype=torch.long)
    return torch.randn(len(index), d, generator=g), torch.randn(H, L, d, generator=g), mask, index


@pytest.mark.parametrize("kind, layers", [("din", 1), ("transformer", 1), ("transformer", 2), ("longer", 0), ("longer", 1), ("longer", 2)])
def test_history_once_per_request_equals_a_history_per_query(shared, kind: str, layers: int):
    """Computing the history side once per history and sharing it is exact: the same outputs and gradients as
    copying the history to every query (what ranking 100 candidates did before)."""
    from iat.models.seq import build_seq_module

    q, s, mask, index = shared
    torch.manual_seed(layers)
    m = build_seq_module(kind, 32, layers).eval()
    got, ref = m(q, s, mask, index), m(q, s[index], mask[index])
    assert got.shape == (len(index), 32)
    assert (got - ref).abs().max() < 1e-5 and ref.abs().mean() > 0.05
    params = list(m.parameters())
    g1, g2 = (torch.autograd.grad(out.square().sum(), params, allow_unused=True) for out in (m(q, s, mask, index), m(q, s[index], mask[index])))
    for a, b in zip(g1, g2):
        assert (a is None and b is None) or torch.allclose(a, b, atol=1e-4)


def test_label_attention_shares_its_keys_exactly(shared):
    from iat.models.seq import LabelAttention

    q, s, mask, index = shared
    labels = (torch.rand(*mask.shape, 2, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    att = LabelAttention(32, heads=4, labels=2)
    got, ref = att(q, s, mask, labels, index), att(q, s[index], mask[index], labels[index])
    assert (got - ref).abs().max() < 1e-5


@pytest.mark.parametrize("side_labels", [True, False])
def test_projected_side_tables_equal_projecting_every_positions_side_info(side_labels: bool):
    """The ranker projects its side-info tables once and sums their rows per position: the numbers (and gradients)
    of looking up 64-d embeddings at every position, concatenating them with the adapter output and projecting."""
    from bench.reference_compute import _tokens_concat
    from iat.data.synthetic import generate
    from iat.features import FeatureEncoder
    from iat.models.ranker import Ranker

    df, schema = generate(30, seed=0, progress=False)
    enc = FeatureEncoder.fit(df, schema)
    torch.manual_seed(0)
    m = Ranker(enc, {"seq": "din", "iat": "din", "side_labels": side_labels})
    cards = dict(zip(enc.cat_names, enc.cardinalities))
    g = torch.Generator().manual_seed(3)
    H, L = 5, 16
    sizes = {"gap": 32, "hour": 25, "weekday": 8, "domain": cards["domain"], "item": cards["item_id"], "cat": cards[schema.category_column], "click": 3, "conv": 4}
    b = {f"tok_{n}": torch.randint(0, k, (H, L), generator=g) for n, k in sizes.items()}
    b["tok"] = torch.randn(H, L, 64, generator=g)
    got, ref = m._instance_tokens(b), _tokens_concat(m, b)
    for a, r in zip(got, ref):
        assert a.shape == (H, L, 32) and (a - r).abs().max() < 1e-5
    params = [m.side_item.weight, m.token_proj.weight, m.side_click.weight]
    g1 = torch.autograd.grad(got[0].square().sum(), params, allow_unused=True)
    g2 = torch.autograd.grad(ref[0].square().sum(), params, allow_unused=True)
    for a, r in zip(g1, g2):
        assert (a is None and r is None) or torch.allclose(a, r, atol=1e-4)
