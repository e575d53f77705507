"""Sequence modules that pool a (query, sequence) pair into one vector: DIN, Transformer, LONGER-style.

All take ``query`` [B, d], ``seq`` [B, L, d] and ``mask`` [B, L] (True = real position) and return [B, d].
A row whose mask is all False (no history) gets a learned "empty history" vector instead of NaNs.
"""

from __future__ import annotations

import torch
from torch import nn

SEQ_MODULES: tuple[str, ...] = ("din", "transformer", "longer")


class _EmptyAware(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.empty = nn.Parameter(torch.zeros(d))

    def _fill_empty(self, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        has = mask.any(dim=1, keepdim=True)
        return torch.where(has, out, self.empty.expand_as(out))


class DIN(_EmptyAware):
    """Target attention (Zhou et al. 2018): an MLP scores each position against the query; weighted sum."""

    def __init__(self, d: int, hidden: int = 64):
        super().__init__(d)
        self.att = nn.Sequential(nn.Linear(4 * d, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q = query.unsqueeze(1).expand_as(seq)
        w = self.att(torch.cat([q, seq, q - seq, q * seq], dim=-1)).squeeze(-1)
        # DIN keeps weights unnormalised (sigmoid) so the pooled norm carries how much history matched.
        w = torch.sigmoid(w) * mask
        out = (w.unsqueeze(-1) * seq).sum(1) / mask.sum(1, keepdim=True).clamp(min=1)
        return self._fill_empty(out, mask)


class _PreLNBlock(nn.Module):
    def __init__(self, d: int, heads: int, ffn: int, dropout: float = 0.0):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, dropout=dropout, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, ffn), nn.GELU(), nn.Linear(ffn, d))

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, key_pad: torch.Tensor | None = None) -> torch.Tensor:
        h = self.ln1(x)
        src = h if kv is None else self.ln1(kv)
        x = x + self.attn(h, src, src, key_padding_mask=key_pad, need_weights=False)[0]
        return x + self.ffn(self.ln2(x))


class TransformerPool(_EmptyAware):
    """Self-attention over [query; sequence]; the query slot's output is the pooled vector."""

    def __init__(self, d: int, layers: int = 2, heads: int = 4):
        super().__init__(d)
        self.blocks = nn.ModuleList([_PreLNBlock(d, heads, 2 * d) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = torch.cat([query.unsqueeze(1), seq], dim=1)
        pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)  # the query slot is never padding
        for blk in self.blocks:
            x = blk(x, key_pad=pad)
        return self._fill_empty(self.ln(x[:, 0]), mask)


class LongerPool(_EmptyAware):
    """LONGER-style: the query plus K learned latent tokens cross-attend to the full sequence (cost O(K*L),
    not O(L^2)), then self-attend among themselves; the query slot's output is the pooled vector."""

    def __init__(self, d: int, latents: int = 8, layers: int = 1, heads: int = 4):
        super().__init__(d)
        self.latents = nn.Parameter(torch.randn(latents, d) * 0.02)
        self.cross = _PreLNBlock(d, heads, 2 * d)
        self.self_blocks = nn.ModuleList([_PreLNBlock(d, heads, 2 * d) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B = query.shape[0]
        q = torch.cat([query.unsqueeze(1), self.latents.unsqueeze(0).expand(B, -1, -1)], dim=1)
        # Padding everywhere would make attention NaN: let empty rows attend to one dummy slot, then replace.
        safe = mask.clone()
        safe[:, -1] |= ~mask.any(dim=1)
        x = self.cross(q, kv=seq, key_pad=~safe)
        for blk in self.self_blocks:
            x = blk(x)
        return self._fill_empty(self.ln(x[:, 0]), mask)


def build_seq_module(kind: str, d: int, layers: int = 1) -> nn.Module:
    if kind == "din":
        return DIN(d)
    if kind == "transformer":
        return TransformerPool(d, layers=layers)
    if kind == "longer":
        return LongerPool(d, layers=layers)
    raise ValueError(f"unknown sequence module '{kind}': expected one of {SEQ_MODULES}")
