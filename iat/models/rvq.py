"""Residual vector quantization with EMA codebooks, one codebook per (sub-token, level) (SIF section 4.3/4.5).

Every sub-token t of an instance is quantized by M levels: level m picks the codeword of codebook (t, m) nearest
to the residual left by levels < m; the reconstruction is the sum of the picked codewords.
Codebooks are buffers, not parameters: they follow the vectors assigned to them by exponential moving averages
(decay 0.99), so no optimizer touches them. Collapse prevention (SIF 4.5): data-dependent initialisation from the
first training batch, EMA updates, restart of dead codes (used less than ``restart_threshold`` of the time over a
window of ``restart_window`` training steps; re-seeded from the current batch's residuals with the global torch
RNG, so a seeded run is deterministic and a resumed one replays it), and an entropy regulariser on the batch's
soft code assignments that rewards spreading usage over the codebook.
All updates happen only in ``forward`` in training mode; ``quantize`` and ``lookup`` never change state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class RVQOutput:
    codes: torch.Tensor  # [B, T, M] int64
    recon: torch.Tensor  # [B, T, d] sum of picked codewords (no gradient: codebooks are buffers)
    entropy: torch.Tensor  # scalar: mean over (t, m) of log V - H(batch-mean soft assignment); 0 = uniform usage
    perplexity: list[float]  # per level: exp(entropy of this batch's code histogram), mean over sub-tokens
    usage: list[float]  # per level: share of the V codes this batch used, mean over sub-tokens
    restarted: int  # dead codes re-seeded in this step (all levels)


class ResidualVQ(nn.Module):
    """M-level residual VQ over T sub-tokens of dimension d, V codes per (sub-token, level)."""

    def __init__(
        self,
        n_tokens: int,
        levels: int = 3,
        codes: int = 256,
        dim: int = 16,
        decay: float = 0.99,
        restart_threshold: float = 1e-3,
        restart_window: int = 100,
        entropy_tau: float = 0.1,
        entropy_rows: int = 256,
    ):
        super().__init__()
        sizes = {"n_tokens": n_tokens, "levels": levels, "codes": codes, "dim": dim, "restart_window": restart_window, "entropy_rows": entropy_rows}
        for name, v in sizes.items():
            if v < 1:
                raise ValueError(f"ResidualVQ: {name} must be >= 1, got {v}")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ResidualVQ: decay must be in [0, 1), got {decay}")
        if not 0.0 <= restart_threshold < 1.0:
            raise ValueError(f"ResidualVQ: restart_threshold must be in [0, 1), got {restart_threshold}")
        if entropy_tau <= 0:
            raise ValueError(f"ResidualVQ: entropy_tau must be > 0, got {entropy_tau}")
        self.T, self.M, self.V, self.d = n_tokens, levels, codes, dim
        self.decay, self.restart_threshold, self.restart_window = decay, restart_threshold, restart_window
        self.entropy_tau, self.entropy_rows = entropy_tau, entropy_rows
        self.register_buffer("codebook", torch.randn(n_tokens, levels, codes, dim) * 0.1)
        # EMA state: codebook = ema_sum / ema_count. Starting the count at 1 with ema_sum = codebook keeps an
        # unused codeword exactly where it is (both decay alike) instead of blowing it up by a tiny count.
        self.register_buffer("ema_count", torch.ones(n_tokens, levels, codes))
        self.register_buffer("ema_sum", self.codebook.clone())
        self.register_buffer("window_count", torch.zeros(n_tokens, levels, codes))
        self.register_buffer("window_rows", torch.zeros((), dtype=torch.long))
        self.register_buffer("window_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))

    # -- pure functions of the current codebooks --------------------------------------------------------------------
    # Internally sub-tokens lead ([T, B, ...]) so every level is one batched matmul over the T codebooks.
    @staticmethod
    def _scores(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """2 r.c - ||c||^2 for residuals r [T, B, d] and codewords c [T, V, d] -> [T, B, V].

        The squared distance is ||r||^2 minus this, so the nearest codeword is its argmax; one fused
        batched matmul instead of a full distance tensor.
        """
        return torch.baddbmm(-(c * c).sum(-1).unsqueeze(1), r, c.transpose(1, 2), alpha=2.0)

    def _check(self, h: torch.Tensor) -> None:
        if h.dim() != 3 or h.shape[1:] != (self.T, self.d):
            raise ValueError(f"ResidualVQ expects sub-token vectors [B, {self.T}, {self.d}], got {tuple(h.shape)}")

    def _levels(self, h: torch.Tensor, entropy: bool) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor | None]:
        """Per level: the residual it quantizes [T, B, d] and its picked codes [T, B]; plus the entropy term."""
        # A snapshot: autograd keeps the codewords of the score computation, and training then updates the
        # codebook in place.
        codebook = self.codebook.to(h.dtype, copy=True)
        offsets = (torch.arange(self.T, device=h.device) * self.V)[:, None]
        rs, idxs, gaps = [], [], []
        r = h.transpose(0, 1)
        # The entropy term estimates the batch's mean soft assignment from an evenly strided subset of at most
        # entropy_rows rows: the softmax over V codes is most of a training step's cost, and the estimate of a
        # mean needs only a few hundred rows.
        stride = -(-r.shape[1] // self.entropy_rows)
        for m in range(self.M):
            c = codebook[:, m]
            with torch.no_grad():  # codes need no gradient; only the entropy term's rows carry one
                idx = self._scores(r, c).max(-1).indices  # max(): ~2.5x faster than argmax on CPU
            if entropy:
                gaps.append(self._usage_entropy_gap(r[:, ::stride], c))
            rs.append(r)
            idxs.append(idx)
            r = r - c.reshape(-1, self.d)[idx + offsets]
        return rs, idxs, torch.stack(gaps).mean() if entropy else None

    def _usage_entropy_gap(self, r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """log V - H(mean over the batch of the soft assignment softmax(-dist / temp)), averaged over sub-tokens.

        The temperature is tau times each row's mean distance to the codewords (detached), so the regulariser
        does not fade as residuals shrink level by level or as the projection's scale drifts. softmax(-dist/temp)
        equals softmax(scores/temp): the ||r||^2 term is constant per row.
        """
        s = self._scores(r, c)
        with torch.no_grad():
            mean_dist = (r * r).sum(-1) - s.mean(-1)  # [T, B]
            temp = (mean_dist.clamp_min(1e-12) * self.entropy_tau).unsqueeze(-1)
        logp = torch.log_softmax(s / temp, dim=-1)  # [T, b, V]
        p = logp.exp()
        per_row = -(p * logp).sum(-1).mean(1)  # [T]
        p_bar = p.mean(1)  # [T, V]
        h = -(p_bar * torch.log(p_bar.clamp_min(1e-12))).sum(-1)
        return (math.log(self.V) - h + per_row).mean()

    @torch.no_grad()
    def quantize(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes [B, T, M] (int64) and reconstruction [B, T, d] of h; never updates anything."""
        self._check(h)
        _, idxs, _ = self._levels(h, entropy=False)
        codes = torch.stack(idxs, dim=-1).transpose(0, 1)
        return codes, self.lookup(codes).to(h.dtype)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Sum of the codewords named by codes [..., T, m] over its first m <= M levels -> [..., T, d]."""
        if codes.dim() < 2 or codes.shape[-2] != self.T or not 1 <= codes.shape[-1] <= self.M:
            raise ValueError(f"codes must be [..., {self.T}, m] with 1 <= m <= {self.M}, got {tuple(codes.shape)}")
        codes = codes.long()
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.V):
            raise ValueError(f"codes must lie in [0, {self.V}), got range [{int(codes.min())}, {int(codes.max())}]")
        m = codes.shape[-1]
        tm = torch.arange(self.T * self.M, device=codes.device).reshape(self.T, self.M)[:, :m] * self.V
        return self.codebook.reshape(-1, self.d)[codes + tm].sum(-2)

    # -- training --------------------------------------------------------------------------------------------------
    def forward(self, h: torch.Tensor) -> RVQOutput:
        """Quantize h [B, T, d]; in training mode also initialise / EMA-update / restart the codebooks."""
        self._check(h)
        if self.training and not bool(self.initialized):
            self._init_from(h.detach())
        rs, idxs, entropy = self._levels(h, entropy=True)
        codes = torch.stack(idxs, dim=-1).transpose(0, 1)
        recon = self.lookup(codes).to(h.dtype)  # with the codewords the codes were picked from, before any update
        restarted = self._update([r.detach() for r in rs], idxs) if self.training else 0
        stats = code_usage(self.histogram(codes))
        return RVQOutput(codes, recon, entropy, stats["perplexity"], stats["usage"], restarted)

    @torch.no_grad()
    def _init_from(self, h: torch.Tensor) -> None:
        """Seed every level's codebook with residual vectors of this batch (level by level)."""
        r = h.to(self.codebook.dtype).transpose(0, 1)  # [T, B, d]
        offsets = (torch.arange(self.T, device=h.device) * self.V)[:, None]
        for m in range(self.M):
            self.codebook[:, m] = r[:, _pick_rows(r.shape[1], self.V, r.device)]
            c = self.codebook[:, m]
            r = r - c.reshape(-1, self.d)[self._scores(r, c).max(-1).indices + offsets]
        self.ema_sum.copy_(self.codebook)
        self.ema_count.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, rs: list[torch.Tensor], idxs: list[torch.Tensor]) -> int:
        """EMA step of every level from residuals [T, B, d] and codes [T, B]; dead-code restart at window end."""
        n = rs[0].shape[1]
        offsets = (torch.arange(self.T, device=rs[0].device) * self.V)[:, None]
        for m, (r, idx) in enumerate(zip(rs, idxs)):
            flat = (idx + offsets).reshape(-1)
            count = torch.bincount(flat, minlength=self.T * self.V).reshape(self.T, self.V).to(self.ema_count.dtype)
            # Per-code sums of the assigned residuals: one weighted bincount per dimension is ~100x faster on CPU
            # than index_add_ (a scatter) and just as deterministic.
            rr = r.reshape(-1, self.d).to(self.ema_sum.dtype)
            total = torch.stack([torch.bincount(flat, weights=rr[:, j], minlength=self.T * self.V) for j in range(self.d)], -1)
            self.ema_count[:, m].mul_(self.decay).add_(count, alpha=1 - self.decay)
            self.ema_sum[:, m].mul_(self.decay).add_(total.reshape(self.T, self.V, self.d).to(self.ema_sum.dtype), alpha=1 - self.decay)
            self.window_count[:, m] += count
        self.codebook.copy_(self.ema_sum / self.ema_count.clamp_min(1e-30).unsqueeze(-1))
        self.window_rows += n
        self.window_steps += 1
        if int(self.window_steps) < self.restart_window:
            return 0
        restarted = self._restart_dead(rs)
        self.window_count.zero_()
        self.window_rows.zero_()
        self.window_steps.zero_()
        return restarted

    @torch.no_grad()
    def _restart_dead(self, rs: list[torch.Tensor]) -> int:
        """Re-seed codes used less than ``restart_threshold`` of the window's rows with this batch's residuals."""
        dead = self.window_count / self.window_rows.clamp_min(1) < self.restart_threshold  # [T, M, V]
        n_dead = int(dead.sum())
        if n_dead == 0:
            return 0
        t, m, v = dead.nonzero(as_tuple=True)
        rows = _pick_rows(rs[0].shape[1], n_dead, rs[0].device)
        seeds = torch.stack(rs, dim=1)[t, m, rows].to(self.codebook.dtype)  # [T, M, B, d] -> [n_dead, d]
        self.codebook[t, m, v] = seeds
        self.ema_sum[t, m, v] = seeds
        self.ema_count[t, m, v] = 1.0
        return n_dead

    # -- statistics ------------------------------------------------------------------------------------------------
    def histogram(self, codes: torch.Tensor) -> torch.Tensor:
        """Counts [T, M, V] of codes [N, T, M]."""
        tm = (torch.arange(self.T * self.M, device=codes.device).reshape(self.T, self.M) * self.V)[None]
        flat = (codes.long() + tm).reshape(-1)
        return torch.bincount(flat, minlength=self.T * self.M * self.V).reshape(self.T, self.M, self.V)


def _pick_rows(n: int, k: int, device: torch.device) -> torch.Tensor:
    """k row indices out of n: distinct when n >= k, else with repetition (global torch RNG, so seeded)."""
    if n >= k:
        return torch.randperm(n, device=device)[:k]
    return torch.randint(0, n, (k,), device=device)


def code_usage(counts: torch.Tensor) -> dict[str, list]:
    """Code-usage statistics from counts [T, M, V].

    Per level m (lists of length M): ``usage`` = mean over sub-tokens of the share of the V codes used at least
    once; ``usage_min`` = the worst sub-token's share; ``perplexity`` = mean over sub-tokens of
    exp(entropy of the empirical code distribution) (V = every code equally used, 1 = collapse);
    ``perplexity_min``. ``per_token_usage`` / ``per_token_perplexity`` are [T][M] nested lists.
    """
    c = counts.double()
    n = c.sum(-1, keepdim=True).clamp_min(1)
    p = c / n
    ent = -(p * torch.log(p.clamp_min(1e-300))).sum(-1)  # [T, M]
    ppl = torch.exp(ent)
    used = (c > 0).double().mean(-1)  # [T, M]
    return {
        "usage": used.mean(0).tolist(),
        "usage_min": used.min(0).values.tolist(),
        "perplexity": ppl.mean(0).tolist(),
        "perplexity_min": ppl.min(0).values.tolist(),
        "per_token_usage": used.tolist(),
        "per_token_perplexity": ppl.tolist(),
    }
