"""Downstream models at L=256: parameters, forward FLOPs per sample, training samples/s, inference candidates/s.

Run: .venv/bin/python bench/bench_downstream.py [--users 300] [--L 256] [--steps 5] [--threads 1]
Tokens come from one-epoch source models (their quality does not change the cost).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.downstream import DownstreamData, DownstreamSpec, build_model
from iat.history import HistoryAssembler
from iat.models.registry import train_source
from iat.tokens import TokenStore
from iat.tokens.materialize import materialize
from iat.train import TrainConfig, set_threads


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--L", type=int, default=256)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    set_threads(a.threads)
    df, schema = generate(a.users, seed=0, progress=False)
    df = add_split(df)
    cfg = TrainConfig(epochs=1, threads=a.threads, progress=False)
    specs = [
        DownstreamSpec("base-din", config={"seq": "din"}),
        DownstreamSpec("+IAT F_iat=DIN", config={"seq": "din", "iat": "din"}, tokens="user_order", L=a.L),
        DownstreamSpec("+IAT F_iat=Transformer", config={"seq": "din", "iat": "transformer"}, tokens="user_order", L=a.L),
        DownstreamSpec("+IAT F_iat=LONGER", config={"seq": "din", "iat": "longer"}, tokens="user_order", L=a.L),
        DownstreamSpec("SIF-Mixer (d16, 2 blocks)", "sif_mixer", {"blocks": 2, "d_model": 16}, tokens="hgaq", L=a.L),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        stores, tokenizer = {}, None
        for kind in ("user_order", "hgaq"):
            b = train_source(df, schema, kind, None, cfg, n_boot=0)
            stores[kind] = TokenStore.open(materialize(b, df, Path(tmp) / kind, progress=False))
            tokenizer = b.model if kind == "hgaq" else tokenizer
        data = DownstreamData.prepare(df, schema)
        rows = data.encoder.transform(df[df["split"] == "train"].iloc[: a.batch])
        print(f"batch={a.batch} L={a.L} threads={a.threads}")
        print("| model | params | GFLOP fwd / sample | train samples/s | inference candidates/s |")
        print("|---|---:|---:|---:|---:|")
        base_flops = None
        for spec in specs:
            store = stores.get(spec.tokens) if spec.tokens else None
            model = build_model(spec, data.encoder, store, tokenizer)
            batch = HistoryAssembler(data.encoder, store, data.clicks, L=spec.L, base_L=32).batch(rows)
            with FlopCounterMode(display=False) as fc:
                model(batch)
            flops = fc.get_total_flops() / a.batch / 1e9
            base_flops = base_flops or flops
            opt = torch.optim.Adam(model.parameters())
            t0 = time.perf_counter()
            for _ in range(a.steps):
                loss, _ = model.loss(batch)
                opt.zero_grad()
                loss.backward()
                opt.step()
            train_s = a.steps * a.batch / (time.perf_counter() - t0)
            model.eval()
            t0 = time.perf_counter()
            for _ in range(a.steps):
                model.predict(batch)
            infer_s = a.steps * a.batch / (time.perf_counter() - t0)
            params = sum(p.numel() for p in model.parameters() if p.requires_grad)
            print(f"| {spec.name} | {params:,} | {flops:.4f} ({flops / base_flops:.1f}x) | {train_s:,.0f} | {infer_s:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
