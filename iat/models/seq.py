"""Sequence modules that pool a (query, sequence) pair into one vector: DIN, Transformer, LONGER-style.

All take ``query`` [B, d], ``seq`` [H, L, d], ``mask`` [H, L] (True = real position) and ``index`` [B] (the
history row of each query; None: H = B, one each) and return [B, d]. Whatever depends on the history alone (DIN's
history term, attention keys and values, LONGER's latents) is computed once per history, then shared by the
queries that read it: a request's candidates at serving time, a session's rows in training. A row whose mask is
all False (no history) gets a learned "empty history" vector instead of NaNs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from iat.models.batching import gather_rows
from iat.models.layers import soft_label_rates

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

    def scores(self, query: torch.Tensor, seq: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L] attention logits. The first layer reads [q, s, q - s, q * s]; split into its query, history and
        product terms (W_q + W_d) q + (W_s - W_d) s + W_p (q * s), the query term runs once per query, the history
        term once per history, and only the product once per (query, position): the numbers of the concatenation."""
        return self._scores(query, seq, None if _one_history(seq, index) else gather_rows(seq, index), index)

    def _scores(self, query: torch.Tensor, seq: torch.Tensor, rows: torch.Tensor | None, index: torch.Tensor | None) -> torch.Tensor:
        """``scores`` given ``rows`` = each query's history [B, L, d], which ``forward`` gathers once for both uses;
        ``rows`` None: one history shared by every query (a rank request), which is never copied per query.
        The sums and the ReLU run in place: each fresh [B, L, hidden] tensor (6.5 MB for a 100 x 256 request) cost
        about as much as the matrix product that fills it."""
        first, last = self.att[0], self.att[2]  # att = Linear, ReLU, Linear
        w_q, w_s, w_d, w_p = first.weight.split(seq.shape[-1], dim=1)
        hist = seq @ (w_s - w_d).T  # [H, L, k]
        q_term = query @ (w_q + w_d).T + first.bias  # [B, k]
        if rows is not None:
            h = ((query.unsqueeze(1) * rows) @ w_p.T).add_(gather_rows(hist, index)).add_(q_term.unsqueeze(1))
            return last(h.relu_()).squeeze(-1)
        # (q_b * s_l) W_p^T = s_l (diag(q_b) W_p^T): one GEMM of the history [L, d] with every query's [d, k] matrix,
        # the query term folded in, laid out [L, B, k].
        (B, d), k = query.shape, w_p.shape[0]
        per_query = (query.T.contiguous().unsqueeze(2) * w_p.T.contiguous().unsqueeze(1)).reshape(d, B * k)  # [d, B k]
        h = torch.addmm(q_term.reshape(1, B * k), seq[0], per_query).view(-1, B, k).add_(hist[0].unsqueeze(1))
        return last(h.relu_()).squeeze(-1).T  # [B, L]

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if _one_history(seq, index):
            # DIN keeps weights unnormalised (sigmoid) so the pooled norm carries how much history matched.
            w = torch.sigmoid(self._scores(query, seq, None, index)) * mask[0]
            out = (w @ seq[0]) / mask[0].sum().clamp(min=1)
            return self._fill_empty(out, mask.expand(query.shape[0], -1))
        rows, mask_q = gather_rows(seq, index), gather_rows(mask, index)
        w = torch.sigmoid(self._scores(query, seq, rows, index)) * mask_q
        out = torch.bmm(w.unsqueeze(1), rows).squeeze(1) / mask_q.sum(1, keepdim=True).clamp(min=1)
        return self._fill_empty(out, mask_q)


def _one_history(seq: torch.Tensor, index: torch.Tensor | None) -> bool:
    """Every query reads the one history of the batch (a rank request's candidates)."""
    return index is not None and seq.shape[0] == 1


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

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[N, R, d] -> [N, heads, R, d / heads]."""
        N, R, d = x.shape
        return x.view(N, R, self.attn.num_heads, d // self.attn.num_heads).transpose(1, 2)

    def keys_values(self, kv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention keys and values of rows ``kv`` [H, L, d] (normalised, projected, per head), for ``attend``."""
        _, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        _, b_k, b_v = self.attn.in_proj_bias.chunk(3)
        src = self.ln1(kv)
        return self._heads(F.linear(src, w_k, b_k)), self._heads(F.linear(src, w_v, b_v))

    def attend(
        self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], key_pad: torch.Tensor, index: torch.Tensor | None = None, self_keys: bool = False
    ) -> torch.Tensor:
        """``forward`` for rows ``x`` [B, R, d] over the ``keys_values`` of H histories, row b reading history
        ``index[b]`` (``key_pad`` [H, L]), and over its own R rows as well if ``self_keys``: the keys and values are
        computed once per history, not once per query (the same numbers as ``forward``, as MultiheadAttention)."""
        B, R, d = x.shape
        w_q, w_k, w_v = self.attn.in_proj_weight.chunk(3)
        b_q, b_k, b_v = self.attn.in_proj_bias.chunk(3)
        h = self.ln1(x)
        k, v = (gather_rows(t, index) for t in kv)
        keep = gather_rows(~key_pad, index)[:, None, None, :]
        if self_keys:
            k = torch.cat([self._heads(F.linear(h, w_k, b_k)), k], dim=2)
            v = torch.cat([self._heads(F.linear(h, w_v, b_v)), v], dim=2)
            keep = torch.cat([keep.new_ones(B, 1, 1, R), keep], dim=-1)
        drop = self.attn.dropout if self.training else 0.0
        o = F.scaled_dot_product_attention(self._heads(F.linear(h, w_q, b_q)), k, v, attn_mask=keep, dropout_p=drop)
        x = x + self.attn.out_proj(o.transpose(1, 2).reshape(B, R, d))
        return x + self.ffn(self.ln2(x))


class TransformerPool(_EmptyAware):
    """Self-attention over [query; sequence]; the query slot's output is the pooled vector."""

    def __init__(self, d: int, layers: int = 2, heads: int = 4):
        super().__init__(d)
        self.blocks = nn.ModuleList([_PreLNBlock(d, heads, 2 * d) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        if len(self.blocks) > 1:  # earlier blocks mix the query into every history row: one history per query
            seq, mask, index = gather_rows(seq, index), gather_rows(mask, index), None
            x = torch.cat([query.unsqueeze(1), seq], dim=1)
            pad = torch.cat([torch.zeros_like(mask[:, :1]), ~mask], dim=1)  # the query slot is never padding
            for blk in self.blocks[:-1]:
                x = blk(x, key_pad=pad)
            query, seq = x[:, 0], x[:, 1:]
        # Only the query slot's output is read: the last block computes that one row, over its own key and the
        # history's keys (those once per history).
        last = self.blocks[-1]
        out = last.attend(query.unsqueeze(1), last.keys_values(seq), ~mask, index, self_keys=True)[:, 0]
        return self._fill_empty(self.ln(out), gather_rows(mask, index))


class LongerPool(_EmptyAware):
    """LONGER-style: the query plus K learned latent tokens cross-attend to the full sequence (cost O(K*L),
    not O(L^2)), then self-attend among themselves; the query slot's output is the pooled vector."""

    def __init__(self, d: int, latents: int = 8, layers: int = 1, heads: int = 4):
        super().__init__(d)
        self.latents = nn.Parameter(torch.randn(latents, d) * 0.02)
        self.cross = _PreLNBlock(d, heads, 2 * d)
        self.self_blocks = nn.ModuleList([_PreLNBlock(d, heads, 2 * d) for _ in range(layers)])
        self.ln = nn.LayerNorm(d)

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        # Padding everywhere would make attention NaN: let empty rows attend to one dummy slot, then replace.
        safe = mask.clone()
        safe[:, -1] |= ~mask.any(dim=1)
        kv = self.cross.keys_values(seq)
        x = self.cross.attend(query.unsqueeze(1), kv, ~safe, index)
        if self.self_blocks:  # the latents' cross-attention reads the history alone: once per history
            latents = self.cross.attend(self.latents.unsqueeze(0).expand(len(seq), -1, -1), kv, ~safe)
            x = torch.cat([x, gather_rows(latents, index)], dim=1)
        for i, blk in enumerate(self.self_blocks):  # the last block computes only the query slot's output
            x = blk(x, rows=1 if i == len(self.self_blocks) - 1 else None)
        return self._fill_empty(self.ln(x[:, 0]), gather_rows(mask, index))


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

    def forward(self, query: torch.Tensor, seq: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """query [B, d], seq [N, L, d], mask [N, L], labels [N, L, labels] in [0, 1] (N histories, ``index`` as in
        the pools) -> [B, out_dim]."""
        _, L, d = seq.shape
        B, H, dh = len(query), self.heads, d // self.heads
        q = self.q(query).view(B, H, 1, dh)
        k = gather_rows(self.k(seq), index).view(B, L, H, dh).transpose(1, 2)  # keys once per history
        mask, labels = gather_rows(mask, index), gather_rows(labels, index)
        s = ((q * k).sum(-1) / dh**0.5).masked_fill(~mask.unsqueeze(1), float("-inf"))  # [B, H, L]
        prior_score, prior_rate = self.prior_score.view(1, H, 1, 1), self.prior_rate.view(1, H, 1, -1)
        rate, mass = soft_label_rates(s.unsqueeze(-2), prior_score, prior_rate, labels.unsqueeze(1))  # one query
        return torch.cat([rate.flatten(1), mass.flatten(1)], dim=-1)


def build_seq_module(kind: str, d: int, layers: int = 1) -> nn.Module:
    if kind == "din":
        return DIN(d)
    if kind == "transformer":
        return TransformerPool(d, layers=layers)
    if kind == "longer":
        return LongerPool(d, layers=layers)
    raise ValueError(f"unknown sequence module '{kind}': expected one of {SEQ_MODULES}")
