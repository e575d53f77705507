"""Sequence modules compute only what is read, exactly: the query slot of the last Transformer / LONGER block and
DIN's query term once per row give the numbers of the full computation (to float rounding)."""

from __future__ import annotations

import pytest
import torch

from iat.models.seq import DIN, LongerPool, TransformerPool


@pytest.fixture
def inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    B, L, d = 32, 40, 32
    mask = torch.rand(B, L, generator=g) > 0.3
    mask[0] = False  # a request without history
    return torch.randn(B, d, generator=g), torch.randn(B, L, d, generator=g), mask


def _full_transformer(m: TransformerPool, q: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = torch.cat([q.unsqueeze(1), s], dim=1)
    pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
    for blk in m.blocks:
        x = blk(x, key_pad=pad)  # every row's output, as a plain Transformer computes it
    return m._fill_empty(m.ln(x[:, 0]), mask)


def _full_longer(m: LongerPool, q: torch.Tensor, s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    x = torch.cat([q.unsqueeze(1), m.latents.unsqueeze(0).expand(len(q), -1, -1)], dim=1)
    safe = mask.clone()
    safe[:, -1] |= ~mask.any(dim=1)
    x = m.cross(x, kv=s, key_pad=~safe)
    for blk in m.self_blocks:
        x = blk(x)
    return m._fill_empty(m.ln(x[:, 0]), mask)


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
