"""Exact savings in training and ranking (issue 14), as ratios against the previous computation in the same run.

    .venv/bin/python bench/bench_exact_savings.py [--L 32 256] [--rounds 5] [--steps 4] [--device cpu|cuda]

- training: samples/s of one optimiser step (forward, backward, Adam) of a +IAT ranker (base DIN sequence plus
  F_iat in {Transformer, LONGER, DIN}) on batches of ``--batch`` rows, each with its own history of L tokens;
- ranking: ``model.predict`` of one rank request, ``--candidates`` candidates sharing one history of L tokens.

"before" is ``bench/reference_compute.py``: every block row computed, DIN on the concatenation, one history copy
per row. The two sides alternate within each round (the machine is shared; the load average is printed) and the
bench checks that both give the same scores. Inputs are random tensors of the real shapes over a real feature
encoder (the cost does not depend on the values).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.reference_compute import reference  # noqa: E402
from iat.data.synthetic import generate  # noqa: E402
from iat.features import FeatureEncoder  # noqa: E402
from iat.models.batching import HIST_INDEX, N_GAP_BUCKETS, frame_batch  # noqa: E402
from iat.models.ranker import Ranker  # noqa: E402

TOKEN_DIM = 64


def make_batch(encoder: FeatureEncoder, frame: Any, rows: int, histories: int, L: int, base_L: int, seed: int, device: str) -> dict[str, torch.Tensor]:
    """``rows`` request rows reading ``histories`` histories of L tokens and ``base_L`` clicked items (row i reads
    history i % histories)."""
    g = torch.Generator().manual_seed(seed)
    b = frame_batch(frame.take(np.arange(rows) % len(frame)))
    cards = dict(zip(encoder.cat_names, encoder.cardinalities))
    cat = encoder.schema.category_column
    H = histories

    def history_mask(n: int) -> torch.Tensor:
        mask = torch.ones(H, n, dtype=torch.bool)
        mask[:, : n // 8] = torch.rand(H, n // 8, generator=g) > 0.5  # some requests with shorter histories (left-padded)
        return mask

    def ids(n: int, mask: torch.Tensor) -> torch.Tensor:
        return torch.randint(1, n, mask.shape, generator=g) * mask

    clicks, mask = history_mask(base_L), history_mask(L)
    b.update(
        seq_item=ids(cards["item_id"], clicks), seq_cat=ids(cards[cat], clicks), seq_gap=ids(N_GAP_BUCKETS, clicks), seq_mask=clicks,
        tok=torch.randn(H, L, TOKEN_DIM, generator=g), tok_mask=mask, tok_click=ids(3, mask), tok_conv=ids(4, mask),
        tok_gap=ids(N_GAP_BUCKETS, mask), tok_hour=ids(25, mask), tok_weekday=ids(8, mask), tok_domain=ids(cards["domain"], mask),
        tok_item=ids(cards["item_id"], mask), tok_cat=ids(cards[cat], mask),
    )  # fmt: skip
    b[HIST_INDEX] = torch.arange(rows) % H
    return {k: v.to(device) for k, v in b.items()}


def timed(fn: Callable[[], Any], device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def compare(model: Ranker, work: Callable[[], Any], rounds: int, reps: int, device: str) -> tuple[list[float], list[float]]:
    """Per-call seconds of ``work`` before / now, the two alternating ``reps`` calls at a time."""
    before: list[float] = []
    now: list[float] = []
    for _ in range(rounds):
        with reference(model):
            work()  # warm-up of this side
            before += [timed(work, device) for _ in range(reps)]
        work()
        now += [timed(work, device) for _ in range(reps)]
    return before, now


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--L", type=int, nargs="+", default=[32, 256])
    ap.add_argument("--iat", nargs="+", default=["transformer", "longer", "din"])
    ap.add_argument("--base-L", type=int, default=32, help="clicked items in the base behaviour sequence (the specs' default)")
    ap.add_argument("--label-heads", type=int, default=4, help="label-attention heads beside F_iat (the experiments' setting)")
    ap.add_argument("--batch", type=int, default=256, help="training rows per step")
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=4, help="calls per side per round")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    a = ap.parse_args()
    if a.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    torch.set_num_threads(a.threads)
    df, schema = generate(40, seed=0, progress=False)
    encoder = FeatureEncoder.fit(df, schema)
    frame = encoder.transform(df.iloc[:512])
    load0 = os.getloadavg()[0]
    print(
        f"device {a.device}, {a.threads} torch thread(s), training batch {a.batch}, rank request {a.candidates} candidates, "
        f"base sequence {a.base_L} clicks, {a.label_heads} label heads"
    )
    print("| F_iat | L | train samples/s before | now | ratio | rank p50 ms before | now | ratio | max |score diff| |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for L in a.L:
        for kind in a.iat:
            torch.manual_seed(0)
            model = Ranker(encoder, {"seq": "din", "iat": kind, "token_dim": TOKEN_DIM, "label_heads": a.label_heads}).to(a.device)
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            train_b = make_batch(encoder, frame, a.batch, a.batch, L, a.base_L, 1, a.device)
            rank_b = make_batch(encoder, frame, a.candidates, 1, L, a.base_L, 2, a.device)

            def step() -> None:
                opt.zero_grad()
                model.loss(train_b)[0].backward()
                opt.step()

            model.train()
            tb, tn = compare(model, step, a.rounds, a.steps, a.device)
            model.eval()
            with torch.no_grad():
                with reference(model):
                    ref = model.predict(rank_b)["p"]
                diff = float((model.predict(rank_b)["p"] - ref).abs().max())
            rb, rn = compare(model, lambda: model.predict(rank_b), a.rounds, a.steps * 3, a.device)
            sb, sn = a.batch / statistics.median(tb), a.batch / statistics.median(tn)
            pb, pn = 1000 * statistics.median(rb), 1000 * statistics.median(rn)
            print(f"| {kind} | {L} | {sb:,.0f} | {sn:,.0f} | {sn / sb:.2f}x | {pb:.1f} | {pn:.1f} | {pb / pn:.2f}x | {diff:.1e} |", flush=True)
    print(f"load average {load0:.2f} before, {os.getloadavg()[0]:.2f} after ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
