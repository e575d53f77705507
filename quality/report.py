"""Write a validation run to disk: clean and quarantine parquet files, an HTML report, a JSON summary."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from iat.data.io import write_atomic
from quality.result import INPUT_ROW, REASON_SEP, REASONS_COLUMN, ValidationResult

EXAMPLES_PER_EXPECTATION = 5
_MIXED = ("mixed", "mixed-integer", "mixed-integer-float")


def write_validation_outputs(result: ValidationResult, out_dir: str | Path) -> dict[str, Path]:
    """Write the four files atomically (each appears under its final name only once complete)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        "clean": out / "clean.parquet",
        "quarantine": out / "quarantine.parquet",
        "report": out / "validation_report.html",
        "summary": out / "validation_summary.json",
    }
    write_atomic(paths["clean"], lambda p: result.clean.to_parquet(p, index=False))
    write_atomic(paths["quarantine"], lambda p: writable_quarantine(result.quarantine).to_parquet(p, index=True))
    write_atomic(paths["report"], lambda p: p.write_text(render_html(result), encoding="utf-8"))
    write_atomic(paths["summary"], lambda p: p.write_text(json.dumps(result.summary(), indent=2)))
    return paths


def render_html(result: ValidationResult) -> str:
    s = result.summary()
    status = "PASSED" if s["passed"] else "FAILED (quarantine share above threshold)"
    rows = "".join(
        f"<tr class='{'ok' if e['success'] else 'bad'}'><td><code>{_e(e['expectation'])}</code></td>"
        f"<td>{_e(e['description'])}</td><td>{e['level']}</td><td>{'pass' if e['success'] else 'FAIL'}</td>"
        f"<td>{e['gx_unexpected_count']}</td><td>{e['quarantined_rows']}</td></tr>"
        for e in s["expectations"]
    )
    examples = "".join(_examples(result, label) for label, n in result.counts.items() if n)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Instance-log validation</title>
<style>
body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;margin-bottom:1.5em}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}}
tr.bad td{{background:#fde2e2}} th{{background:#eee}}
</style></head><body>
<h1>Instance-log validation: {status}</h1>
<table>
<tr><th>input rows</th><td>{s['n_input']}</td></tr>
<tr><th>clean rows</th><td>{s['n_clean']}</td></tr>
<tr><th>quarantined rows</th><td>{s['n_quarantine']} ({s['quarantine_share']:.3%})</td></tr>
<tr><th>allowed quarantine share</th><td>{s['max_quarantine_share']:.3%}</td></tr>
</table>
<h2>Expectations (Great Expectations)</h2>
<p>"GX unexpected" counts what GX flagged; "quarantined" counts rows moved to quarantine for it
(they differ only for uniqueness: GX flags every copy of a repeated id, the first copy is kept).</p>
<table><tr><th>expectation</th><th>checks</th><th>level</th><th>result</th><th>GX unexpected</th>
<th>quarantined</th></tr>{rows}</table>
<h2>Examples of quarantined rows</h2>{examples or '<p>none</p>'}
</body></html>
"""


def _examples(result: ValidationResult, label: str) -> str:
    q = result.quarantine
    hit = q[REASONS_COLUMN].map(lambda r: label in r.split(REASON_SEP))
    sample = q[hit].head(EXAMPLES_PER_EXPECTATION)
    outcome = next(o for o in result.outcomes if o.label == label)
    cols = [c for c in outcome.columns if c in q.columns] + [REASONS_COLUMN]
    head = "".join(f"<th>{_e(c)}</th>" for c in [INPUT_ROW, *cols])
    body = "".join(
        "<tr>" + f"<td>{idx}</td>" + "".join(f"<td>{_e(repr(row[c]))}</td>" for c in cols) + "</tr>"
        for idx, row in sample.iterrows()
    )
    return (f"<h3><code>{_e(label)}</code>: {result.counts[label]} rows</h3>"
            f"<p>{_e(outcome.description)}</p><table><tr>{head}</tr>{body}</table>")


def writable_quarantine(q: pd.DataFrame) -> pd.DataFrame:
    """Parquet needs one type per column: a quarantined column mixing numbers and text is stored as text."""
    out = q.copy()
    for col in out.columns:
        if out[col].dtype == object and pd.api.types.infer_dtype(out[col], skipna=True) in _MIXED:
            out[col] = out[col].map(str, na_action="ignore")
    return out


def _e(value: object) -> str:
    return html.escape(str(value))
