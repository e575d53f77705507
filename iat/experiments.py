"""The downstream experiment matrix of the papers, over seeds, and its tables (markdown, papers' form).

Every cell is the mean over seeds of a *paired* relative difference: for each seed, (metric of the model -
metric of its base model trained with the same seed) / base, in %; the CI is a t-interval over seeds.
Source models and token stores are trained once per data set (seed 0); seeds vary the downstream model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from iat.downstream import DownstreamSpec
from iat.metrics import oracle_auc, paired_relative_change

ARCHS = ("din", "transformer", "longer")
F_IAT = "transformer"  # the paper's best F_iat; the F_iat table varies it


def gbdt_specs(L: int = 64, tokens: str | None = "user_order") -> list[DownstreamSpec]:
    """The practitioner's baseline beside every table: LightGBM on the base ranker's inputs, + strict-past aggregates
    of its clicked-item sequence, and (``tokens``) + pooled instance tokens of that store (``iat.models.gbdt``)."""
    specs = [DownstreamSpec("gbdt", "gbdt", {"inputs": "base"}), DownstreamSpec("gbdt-seq", "gbdt", {"inputs": "seq"})]
    if tokens:
        specs.append(DownstreamSpec(f"gbdt-tokens-{tokens.replace('_', '-')}", "gbdt", {"inputs": "tokens"}, tokens, L))
    return specs


def matrix_specs(
    L: int = 64,
    lengths: tuple[int, ...] = (16, 64, 256),
    with_hgaq: bool = True,
    ranker: dict[str, Any] | None = None,
    archs: tuple[str, ...] = ARCHS,
) -> dict[str, list[DownstreamSpec]]:
    """Specs per table. Names are unique across tables; a spec shared by two tables is trained once. ``ranker``:
    config keys every neural ranker shares (e.g. tuned widths); ``archs``: the base sequence modules of the main
    table (a subset keeps a large data set affordable); each table also carries the GBDT rows."""
    unknown = sorted(set(archs) - set(ARCHS))
    if unknown or not archs:
        raise ValueError(f"matrix.archs: unknown or empty {unknown or list(archs)}; known: {list(ARCHS)}")
    base_cfg = dict(ranker or {})

    def _ranker(name: str, seq: str, tokens: str | None = None, L: int = 64, **cfg: Any) -> DownstreamSpec:
        iat = cfg.pop("iat", F_IAT if tokens else None)
        return DownstreamSpec(name, "ranker", {**base_cfg, "seq": seq, "iat": iat, **cfg}, tokens, L)

    main = []
    for a in archs:
        main += [_ranker(f"base-{a}", a, L=L), _ranker(f"t-iat-{a}", a, "temporal", L), _ranker(f"u-iat-{a}", a, "user_order", L)]
    main += gbdt_specs(L, "user_order")
    f_iat = [_ranker(f"u-iat-din-fiat-{f}", "din", "user_order", L, iat=f) if f != F_IAT else _ranker("u-iat-din", "din", "user_order", L) for f in ARCHS]
    ablations = [
        _ranker("u-iat-din", "din", "user_order", L),
        _ranker("u-iat-din-post-sit", "din", "user_order_post", L),
        _ranker("u-iat-din-no-labels", "din", "user_order", L, side_labels=False),
        _ranker("u-iat-din-after", "din", "user_order", L, iat_position="after"),
        _ranker("u-iat-din-id-query", "din", "user_order", L, query="id"),
    ] + [_ranker(f"u-iat-din-L{n}", "din", "user_order", n) if n != L else _ranker("u-iat-din", "din", "user_order", L) for n in lengths]
    gb = gbdt_specs(L, None)
    tables = {"main": main, "f_iat": f_iat + gb, "ablations": ablations + gb}
    if with_hgaq:
        tables["sif"] = [
            _ranker("base-din", "din", L=L),
            _ranker("u-iat-din", "din", "user_order", L),
            # d_model 16 (the paper's d_0) and 2 blocks: 4 blocks at d 32 cost ~25 min per run on one core.
            DownstreamSpec("sif-mixer", "sif_mixer", {"mixer": "axial", "blocks": 2, "d_model": 16}, "hgaq", L),
            DownstreamSpec("sif-flat", "sif_mixer", {"mixer": "flat", "blocks": 2, "d_model": 16}, "hgaq", min(L, 8)),
            *gb,
        ]
    return tables


def base_of(spec: DownstreamSpec) -> str:
    """The base model a spec is compared with: the base ranker of the same sequence architecture (base-din for the
    SIF-Mixer and the GBDT rows)."""
    seq = spec.config.get("seq", "din") if spec.model == "ranker" else "din"
    return f"base-{seq}"


def oracles(df: pd.DataFrame) -> dict[str, float]:
    """split -> the oracle AUC on valid and test (empty for logs without the generator's p_click)."""
    return {s: o for s in ("valid", "test") if (o := oracle_auc(df, s)) is not None}


@dataclass
class MatrixRun:
    results: pd.DataFrame  # one row per (spec, seed, split) with auc, gauc, logloss, params, samples_per_s
    oracle: dict[str, float]  # split -> oracle AUC (synthetic only)


def relative_table(run: MatrixRun, names: list[str], split: str = "test") -> pd.DataFrame:
    """Per spec: absolute metrics (mean over seeds) and paired relative deltas vs its base, mean and 95% CI."""
    r = run.results[run.results["split"] == split].set_index(["spec", "seed"])
    out = []
    for name in names:
        mine = r.loc[name]
        row: dict[str, Any] = {"model": name, "seeds": len(mine)}
        for k in ("auc", "gauc", "logloss"):
            row[k] = float(mine[k].mean())
        base = mine["base"].iloc[0]
        if base != name:
            b = r.loc[base]
            for k in ("auc", "gauc", "logloss"):
                row[f"d_{k}"] = paired_relative_change(mine[k].to_numpy(), b.loc[mine.index, k].to_numpy())
        if split in run.oracle:
            b_auc = float(r.loc[base]["auc"].mean())
            gap = run.oracle[split] - b_auc
            row["gap_closed"] = (row["auc"] - b_auc) / gap if gap > 0 else np.nan
        row["params"] = int(mine["params"].iloc[0])
        out.append(row)
    return pd.DataFrame(out)


def format_table(df: pd.DataFrame, title: str) -> str:
    """Markdown: absolute AUC / GAUC / LogLoss and relative deltas (%) with 95% CIs over seeds."""

    def ci(v: Any) -> str:
        if not isinstance(v, tuple):
            return "—"
        m, lo, hi = v
        if np.isnan(lo):  # one seed: no interval
            return f"{m:+.2f}%"
        return f"{m:+.2f}% [{lo:+.2f}, {hi:+.2f}]"

    has_gap = "gap_closed" in df.columns
    head = "| model | AUC | GAUC | LogLoss | ΔAUC | ΔGAUC | ΔLogLoss |" + (" gap closed |" if has_gap else "") + " params |"
    sep = "|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if has_gap else "") + "---:|"
    lines = [f"**{title}**", "", head, sep]
    for _, r in df.iterrows():
        cells = [r["model"], f"{r['auc']:.4f}", f"{r['gauc']:.4f}", f"{r['logloss']:.4f}"]
        cells += [ci(r.get(f"d_{k}")) for k in ("auc", "gauc", "logloss")]
        if has_gap:
            cells.append("—" if pd.isna(r["gap_closed"]) or r["model"].startswith("base-") else f"{100 * r['gap_closed']:.1f}%")
        cells.append(f"{r['params']:,}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
