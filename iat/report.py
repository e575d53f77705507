"""The end-to-end result table: base ranker vs the same ranker + IAT tokens, over seeds, with CIs and the oracle.

Input: each model's per-seed metrics (``RankerBundle.metrics["seeds"]``: one entry per training seed with the
``valid`` / ``test`` metrics of ``iat.train.evaluate_model``). With one seed the CIs are that model's user
bootstrap 95% CIs; with several seeds the values are means over seeds and the CIs t-intervals over seeds, and
the relative change of +IAT vs base is paired by seed (as in ``iat.experiments``).
The table is a plain JSON-able dict (a ZenML artifact and the deployed pipeline's HTTP answer) and formats as
markdown.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from iat.metrics import mean_ci, paired_relative_change

METRICS = ("auc", "gauc", "logloss")


def per_seed(metrics: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The per-seed entries of a ranker's metrics (a bundle trained before seeds were recorded counts as one)."""
    seeds = metrics.get("seeds")
    if seeds:
        return list(seeds)
    return [{"seed": None, "valid": metrics["valid"], "test": metrics["test"]}]


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _row(label: str, name: str, entries: list[dict[str, Any]], split: str) -> dict[str, Any]:
    row: dict[str, Any] = {"label": label, "model": name, "seeds": [e["seed"] for e in entries]}
    for k in METRICS:
        vals = [e[split][k] for e in entries]
        if len(vals) == 1:  # one seed: the bootstrap CI over users of that model
            m = entries[0][split]
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = float(vals[0]), _nan_to_none(m.get(f"{k}_lo")), _nan_to_none(m.get(f"{k}_hi"))
        else:  # several seeds: mean and t-interval over seeds
            mean, lo, hi = mean_ci(vals)
            row[k], row[f"{k}_lo"], row[f"{k}_hi"] = mean, _nan_to_none(lo), _nan_to_none(hi)
    row["ci"] = "bootstrap over users" if len(entries) == 1 else f"t-interval over {len(entries)} seeds"
    return row


def result_table(
    models: Sequence[tuple[str, str, Mapping[str, Any]]], oracle: float | None = None, split: str = "test"
) -> dict[str, Any]:
    """``models``: (label, model name, metrics) with the base model first. Returns the table as a dict:
    ``rows`` (absolute metrics with CIs), ``delta_vs_base`` (relative change in % of each other model, paired by
    seed; a CI when there are several seeds), ``oracle_auc`` and ``gap_closed``, the share of the base -> oracle
    AUC gap closed, also in % (``units`` says so: a deployed pipeline's invoke answers with this dict)."""
    if not models:
        raise ValueError("result_table needs at least the base model")
    entries = [(label, name, per_seed(m)) for label, name, m in models]
    rows = [_row(label, name, e, split) for label, name, e in entries]
    base_label, _, base_entries = entries[0]
    base_by_seed = {e["seed"]: e for e in base_entries}
    deltas: dict[str, Any] = {}
    for label, _, es in entries[1:]:
        paired = [(e, base_by_seed[e["seed"]]) for e in es if e["seed"] in base_by_seed]
        if not paired:
            raise ValueError(f"'{label}' shares no training seed with the base model: cannot pair them")
        d: dict[str, Any] = {"seeds": len(paired)}
        for k in METRICS:
            mean, lo, hi = paired_relative_change([e[split][k] for e, _ in paired], [b[split][k] for _, b in paired])
            d[k], d[f"{k}_lo"], d[f"{k}_hi"] = mean, _nan_to_none(lo), _nan_to_none(hi)
        deltas[label] = d
    table: dict[str, Any] = {"split": split, "base": base_label, "rows": rows, "delta_vs_base": deltas, "oracle_auc": oracle}
    table["units"] = {"rows": "metric values", "delta_vs_base": "percent", "gap_closed": "percent"}
    if oracle is not None:
        gap = oracle - rows[0]["auc"]
        table["gap_closed"] = {r["label"]: (float(100 * (r["auc"] - rows[0]["auc"]) / gap) if gap > 0 else None) for r in rows[1:]}
    return table


def _ci(r: Mapping[str, Any], k: str) -> str:
    lo, hi = r.get(f"{k}_lo"), r.get(f"{k}_hi")
    return f"{r[k]:.4f} [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else f"{r[k]:.4f}"


def format_result_table(table: Mapping[str, Any]) -> str:
    """Markdown: one row per model (AUC / GAUC / LogLoss with 95% CIs), the relative change vs base, the oracle."""
    rows = table["rows"]
    n_seeds = len(rows[0]["seeds"])
    lines = [
        f"{table['split']} split | AUC [95% CI] | GAUC [95% CI] | LogLoss [95% CI]",
        "---|---|---|---",
    ]
    for r in rows:
        lines.append(f"{r['label']} ({r['model']}) | {_ci(r, 'auc')} | {_ci(r, 'gauc')} | {_ci(r, 'logloss')}")
    lines.append(f"CIs: {rows[0]['ci']}" + ("" if n_seeds == 1 else "; values are means over seeds"))
    for label, d in table["delta_vs_base"].items():
        parts = []
        for k, name in (("auc", "AUC"), ("gauc", "GAUC"), ("logloss", "LogLoss")):
            ci = f" [{d[k + '_lo']:+.2f}, {d[k + '_hi']:+.2f}]" if d.get(k + "_lo") is not None else ""
            parts.append(f"{name} {d[k]:+.2f}%{ci}")
        paired = "one seed" if d["seeds"] == 1 else f"paired over {d['seeds']} seeds"
        lines.append(f"relative change of {label} vs {table['base']}: " + ", ".join(parts) + f" ({paired})")
    if table.get("oracle_auc") is not None:
        closed = table.get("gap_closed") or {}
        shares = ", ".join(f"{k} {v:+.1f}%" for k, v in closed.items() if v is not None)
        lines.append(f"oracle AUC (the generator's true p_click): {table['oracle_auc']:.4f}" + (f"; share of the base->oracle gap closed: {shares}" if shares else ""))
    if table.get("transfer"):
        lines += ["", table["transfer"]]
    return "\n".join(lines)


def model_card(name: str, spec: Mapping[str, Any], metrics: Mapping[str, Any], token_store: Mapping[str, Any] | None) -> str:
    """A ranker's card in markdown: what it is, what it read, and its valid / test metrics (with CIs) and per seed.

    ZenML renders it in the run view and the artifact page, where the open-source dashboard shows no model page."""
    entries = per_seed(metrics)
    lines = [f"# Ranker `{name}`", "", f"- spec: `{dict(spec)}`"]
    if token_store:
        lines.append(f"- instance tokens: store `{token_store.get('path')}` ({token_store.get('rows')} tokens, {token_store.get('dtype')})")
    else:
        lines.append("- instance tokens: none (a base ranker)")
    if metrics.get("params") is not None:
        lines.append(f"- parameters: {int(metrics['params']):,}")
    lines.append(f"- training seeds: {', '.join(str(e['seed']) for e in entries)}")
    for split in ("valid", "test"):
        table = result_table([(name, name, metrics)], split=split)
        lines += ["", f"## {split}", "", format_result_table(table)]
    lines += ["", "## per seed (test)", "", "| seed | best epoch | AUC | GAUC | LogLoss |", "|---:|---:|---:|---:|---:|"]
    for e in entries:
        t = e["test"]
        lines.append(f"| {e['seed']} | {e.get('best_epoch', '')} | {t['auc']:.4f} | {t['gauc']:.4f} | {t['logloss']:.4f} |")
    return "\n".join(lines)
