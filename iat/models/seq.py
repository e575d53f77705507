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

    def scores(self, query: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
        """[B, L] attention logits. The first layer reads [q, s, q - s, q * s]; split into its query, history and
        product terms (W_q + W_d) q + (W_s - W_d) s + W_p (q * s), the query term runs once per row, not per
        position: the same numbers as the concatenation, with half its multiply-adds."""
        first, rest = self.att[0], self.att[1:]
        d = seq.shape[-1]
        w_q, w_s, w_d, w_p = first.weight.split(d, dim=1)
        h = seq @ (w_s - w_d).T + (query.unsqueeze(1) * seq) @ w_p.T + (query @ (w_q + w_d).T + first.bias).unsqueeze(1)
        return rest(h).squeeze(-1)

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        w = self.scores(query, seq)
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

    def forward(self, x: torch.Tensor, kv: torch.Tensor | None = None, key_pad: torch.Tensor | None = None, rows: int | None = None) -> torch.Tensor:
        """Rows of ``x`` attend to ``kv`` (default: ``x`` itself). ``rows``: compute only the first ``rows`` outputs
        (every row still serves as a key): exact for a last layer whose other outputs nobody reads."""
        src = self.ln1(x if kv is None else kv)
        h = src if kv is None else self.ln1(x)
        if rows is not None:
            x, h = x[:, :rows], h[:, :rows]
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
        # Only the query slot's output is read: the last block computes that one row (the others are keys only).
        for i, blk in enumerate(self.blocks):
            x = blk(x, key_pad=pad, rows=1 if i == len(self.blocks) - 1 else None)
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
        x = self.cross(q, kv=seq, key_pad=~safe, rows=None if self.self_blocks else 1)
        for i, blk in enumerate(self.self_blocks):  # the last block computes only the query slot's output
            x = blk(x, rows=1 if i == len(self.self_blocks) - 1 else None)
        return self._fill_empty(self.ln(x[:, 0]), mask)


class LabelAttention(nn.Module):
    """Per head, a soft nearest-neighbour estimate of the request's outcome rates from the user's past instances.

    The query attends over the (label-free) tokens plus a learned prior slot; the attention-weighted mean of the
    tokens' labels is the head's estimate (the prior's rate where nothing similar was seen), and the log attention
    mass over real tokens (relative to the prior) says how much similar history there is. Output [B, heads *
    (labels + 1)]. Keys never hold the labels they average, so a head cannot pick tokens by their outcome.
    """

    def __init__(self, d: int, heads: int = 4, labels: int = 1):
        super().__init__()
        if d % heads:
            raise ValueError(f"label attention width {d} is not divisible by {heads} heads")
        self.heads, self.labels = heads, labels
        self.q, self.k = nn.Linear(d, d), nn.Linear(d, d)
        self.prior_score = nn.Parameter(torch.zeros(heads))
        self.prior_rate = nn.Parameter(torch.zeros(heads, labels))  # logits
        self.out_dim = heads * (labels + 1)

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """query [B, d], seq [B, L, d], mask [B, L], labels [B, L, labels] in [0, 1] -> [B, out_dim]."""
        B, L, d = seq.shape
        H, dh = self.heads, d // self.heads
        q = self.q(query).view(B, H, 1, dh)
        k = self.k(seq).view(B, L, H, dh).transpose(1, 2)
        s = ((q * k).sum(-1) / dh**0.5).masked_fill(~mask.unsqueeze(1), float("-inf"))  # [B, H, L]
        prior = self.prior_score.view(1, H, 1).expand(B, H, 1)
        a = torch.softmax(torch.cat([prior, s], dim=-1), dim=-1)
        rate = a[..., :1] * torch.sigmoid(self.prior_rate).unsqueeze(0) + torch.einsum("bhl,blc->bhc", a[..., 1:], labels)
        mass = torch.logsumexp(torch.cat([prior, s], dim=-1), dim=-1) - prior.squeeze(-1)  # >= 0; 0 without history
        return torch.cat([rate.flatten(1), mass], dim=-1)


def build_seq_module(kind: str, d: int, layers: int = 1) -> nn.Module:
    if kind == "din":
        return DIN(d)
    if kind == "transformer":
        return TransformerPool(d, layers=layers)
    if kind == "longer":
        return LongerPool(d, layers=layers)
    raise ValueError(f"unknown sequence module '{kind}': expected one of {SEQ_MODULES}")
