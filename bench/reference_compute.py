"""The computation the models did before the exact savings of issue 14, for benches that report ratios in one run.

- every Transformer / LONGER block computes every row's output (not only the query slot's, which is all that is read);
- DIN's first attention layer runs on the concatenation [q, s, q - s, q * s] at every position;
- an instance token's side-info embeddings are looked up (64-d), summed and concatenated with the adapter's output
  at every position, then projected;
- every row of a batch gets its own copy of its history (a request's 100 candidates: 100 copies), so the adapter,
  side info, projections, keys and values run once per candidate.

``with reference(model):`` patches one model instance (its modules' ``forward``) and restores it on exit. The
numbers are the same as the current code's (the exactness tests in tests/test_seq_modules.py); only the cost differs.
"""

from __future__ import annotations

import types
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from iat.models.batching import expand_histories, gather_rows
from iat.models.ranker import Ranker
from iat.models.seq import DIN, LongerPool, TransformerPool


def _transformer_full(self: TransformerPool, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    seq, mask = gather_rows(seq, index), gather_rows(mask, index)
    x = torch.cat([query.unsqueeze(1), seq], dim=1)
    pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)
    for blk in self.blocks:
        x = blk(x, key_pad=pad)
    return self._fill_empty(self.ln(x[:, 0]), mask)


def _longer_full(self: LongerPool, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    seq, mask = gather_rows(seq, index), gather_rows(mask, index)
    x = torch.cat([query.unsqueeze(1), self.latents.unsqueeze(0).expand(len(query), -1, -1)], dim=1)
    safe = mask.clone()
    safe[:, -1] |= ~mask.any(dim=1)
    x = self.cross(x, kv=seq, key_pad=~safe)
    for blk in self.self_blocks:
        x = blk(x)
    return self._fill_empty(self.ln(x[:, 0]), mask)


def _din_concat(self: DIN, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    seq, mask = gather_rows(seq, index), gather_rows(mask, index)
    q = query.unsqueeze(1).expand_as(seq)
    w = torch.sigmoid(self.att(torch.cat([q, seq, q - seq, q * seq], dim=-1)).squeeze(-1)) * mask
    out = (w.unsqueeze(-1) * seq).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
    return self._fill_empty(out, mask)


def _tokens_concat(self: Ranker, b: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    side = sum(getattr(self, f"side_{n}")(b[f"tok_{n}"]) for n in ("gap", "hour", "weekday", "domain", "item", "cat"))
    tok = b["tok"] if self.config["token_input"] else torch.zeros_like(b["tok"])
    content = self.token_proj(torch.cat([self.adapter(tok), side], dim=-1))
    if not self.config["side_labels"]:
        return content, content
    labels = self.side_click(b["tok_click"]) + self.side_conv(b["tok_conv"])
    return content + labels @ self.token_proj.weight[:, -labels.shape[-1] :].T, content


_REFERENCE = {TransformerPool: _transformer_full, LongerPool: _longer_full, DIN: _din_concat}


@contextmanager
def reference(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` computing as before issue 14 inside the block (same outputs, the old cost)."""
    patched: list[nn.Module] = []
    for m in model.modules():
        fn = _REFERENCE.get(type(m))
        if fn is not None:
            m.forward = types.MethodType(fn, m)  # type: ignore[method-assign]
            patched.append(m)
    if isinstance(model, Ranker):
        model._instance_tokens = types.MethodType(_tokens_concat, model)  # type: ignore[method-assign]
    current = model.forward
    model.forward = lambda b: current(expand_histories(b))  # type: ignore[method-assign]
    patched.append(model)
    try:
        yield model
    finally:
        for m in patched:
            del m.forward  # back to the class's method
        if isinstance(model, Ranker):
            del model._instance_tokens
