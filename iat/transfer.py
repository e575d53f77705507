"""Transfer of instance tokens (IAT paper, section 7): do tokens learned in one place help elsewhere?

Every source model here is trained on **one domain's rows only** (``iat.models.registry.train_source`` on that
domain's slice of the split log), and its token store holds that domain's instances only (all periods,
``iat.tokens.materialize``). A downstream ranker of domain D trains on D's rows, with its own encoder, its own
item-id behaviour sequence (D's clicks) and a fresh IAT adapter, and reads the tokens unchanged through the
usual leak-free path (``TokenStore.fetch_before`` in ``iat.history.HistoryAssembler``: the user's last L
instances of the store's domain strictly before the request ts). Three settings, each against the same ranker
without tokens (``base``) trained with the same seed:

- **cross-domain**: a source trained on domain A; rankers in domains B and C (rows of users who also appear in
  A) read each user's past A instances, vs tokens from an in-domain source (trained on B itself, store of B's
  instances); a control reads the A side info (label, time gap, item, category) with the token content zeroed.
- **in-domain, later period**: a source trained on the first ``period`` of A's train period and then frozen; the
  A ranker reads its tokens for everything after (including the whole test period), vs the source trained on
  the whole train period.
- **in-domain, another task**: a source trained on click only (conversion loss weight 0) feeds an A ranker
  selected and scored on conversion (pCVR on clicked rows), vs the source trained on click + conversion. Only
  where the log has conversion labels (synthetic, not MovieLens).

Source models are trained once (``source_seed``); ``seeds`` vary the downstream rankers. Every cell of the table
is the mean over seeds of the paired relative difference to the base (``iat.experiments.relative_table``) with
a 95% t-interval over seeds. A run lives in a work folder (sources, token stores, a results CSV) and resumes:
finished sources, stores and (job, seed) results are never redone.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from iat.data.io import append_csv_rows
from iat.downstream import DownstreamData, DownstreamSpec, train_downstream
from iat.experiments import MatrixRun, format_table, relative_table
from iat.metrics import oracle_auc
from iat.models.registry import SourceBundle, load_bundle, save_bundle, train_source
from iat.schema import SPLIT_COLUMN, Schema
from iat.tokens.materialize import materialize
from iat.tokens.store import TokenStore
from iat.train import TrainConfig

SECTIONS = ("cross-domain", "later period", "task")
METRICS = ("auc", "gauc", "logloss")
RESULTS_FILE, CONFIG_FILE, TABLE_FILE = "results.csv", "transfer.json", "table.md"
LATER = "later"  # split label of the rows a period source never reads


@dataclass
class TransferConfig:
    source_domain: str | None = None  # A; None: the domain with the most rows
    target_domains: list[str] | None = None  # None: every other domain
    source_kind: str = "temporal"  # temporal | user_order
    source_model: dict[str, Any] = field(default_factory=dict)
    source_train: dict[str, Any] = field(default_factory=lambda: {"epochs": 3, "batch_size": 1024, "patience": 1})
    source_seed: int = 0
    train: dict[str, Any] = field(default_factory=lambda: {"epochs": 2, "batch_size": 512, "patience": 1, "lr": 1e-3})
    ranker: dict[str, Any] = field(default_factory=lambda: {"seq": "din", "iat": "transformer"})
    L: int = 32
    base_L: int = 32
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    period: float | None = 0.5  # later-period transfer: the source sees the first `period` of A's train period; None: skip
    task: bool = True  # task transfer (click-only source -> conversion ranker), where the log has conversions
    controls: bool = True  # cross-domain with the token content zeroed (side info only)
    gbdt: bool = True  # beside each base: LightGBM on the base inputs + clicked-item aggregates; cross-domain also + the A tokens
    shared_users: bool = True  # target-domain rankers train and score on users who also have source-domain rows
    threads: int = 1  # torch threads per training

    def __post_init__(self) -> None:
        if self.period is not None and not 0 < self.period < 1:
            raise ValueError(f"transfer: period must lie in (0, 1) or be null, got {self.period}")
        if not self.seeds:
            raise ValueError("transfer: seeds must name at least one seed")
        if self.source_kind not in ("temporal", "user_order"):  # the kinds whose tokens a ranker's F_iat reads
            raise ValueError(f"transfer: source_kind must be temporal or user_order, got '{self.source_kind}'")
        if not self.ranker.get("iat"):
            raise ValueError("transfer: ranker.iat must name the F_iat module (din | transformer | longer)")

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> "TransferConfig":
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"transfer config: unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}")
        defaults = cls()
        for k in ("source_train", "train", "ranker"):  # partial sections override the defaults key by key
            if k in d:
                d[k] = {**getattr(defaults, k), **(d[k] or {})}
        return cls(**d)

    def identity(self) -> dict[str, Any]:
        """What a work folder's results depend on (seeds and threads may change between resumed runs)."""
        return {k: v for k, v in asdict(self).items() if k not in ("seeds", "threads")}


@dataclass(frozen=True)
class SourcePlan:
    """A source model trained on one domain's rows (optionally an early period, optionally click only)."""

    name: str
    domain: str
    period: float | None = None
    click_only: bool = False


@dataclass(frozen=True)
class TransferJob:
    """One downstream ranker: its domain, the task it is selected and scored on, the tokens it reads."""

    name: str
    section: str
    domain: str
    task: str = "click"
    source: str | None = None  # a SourcePlan name; None: the base ranker
    base: str = ""  # the job it is compared with (same domain and task, no tokens)
    token_input: bool = True
    model: str = "ranker"  # ranker | gbdt (the practitioner's baseline; with a source: pooled tokens as features)


def resolve_domains(cfg: TransferConfig, df: pd.DataFrame) -> tuple[str, list[str]]:
    counts = df["domain"].value_counts()
    a = cfg.source_domain or str(counts.index[0])
    targets = list(cfg.target_domains) if cfg.target_domains else sorted(str(d) for d in counts.index if d != a)
    missing = sorted({a, *targets} - set(map(str, counts.index)))
    if missing:
        raise ValueError(f"transfer: domains {missing} are not in the log (it has {sorted(map(str, counts.index))})")
    if a in targets:
        raise ValueError(f"transfer: the source domain '{a}' cannot also be a target domain (in-domain transfer runs on it anyway)")
    return a, targets


def has_conversions(df: pd.DataFrame) -> bool:
    return "conversion" in df.columns and bool(df["conversion"].notna().any())


def plan(cfg: TransferConfig, df: pd.DataFrame) -> tuple[list[SourcePlan], list[TransferJob]]:
    """The sources to train and the downstream jobs to run (every job's base is in the list, before it)."""
    a, targets = resolve_domains(cfg, df)
    sources = [SourcePlan(a, a)] + [SourcePlan(t, t) for t in targets]
    jobs: list[TransferJob] = []
    for t in targets:
        base = f"{t}: base (no tokens)"
        jobs += [
            TransferJob(base, "cross-domain", t, base=base),
            TransferJob(f"{t}: +{a} tokens (cross-domain)", "cross-domain", t, source=a, base=base),
            TransferJob(f"{t}: +{t} tokens (in-domain)", "cross-domain", t, source=t, base=base),
        ]
        if cfg.controls:
            jobs.append(TransferJob(f"{t}: +{a} side info only (tokens zeroed)", "cross-domain", t, source=a, base=base, token_input=False))
        if cfg.gbdt:
            jobs += [
                TransferJob(f"{t}: GBDT (no tokens)", "cross-domain", t, base=base, model="gbdt"),
                TransferJob(f"{t}: GBDT + {a} tokens (cross-domain)", "cross-domain", t, source=a, base=base, model="gbdt"),
            ]
    base = f"{a}: base (no tokens)"
    jobs += [TransferJob(base, "later period", a, base=base), TransferJob(f"{a}: +{a} tokens (source trained on the whole train period)", "later period", a, source=a, base=base)]
    if cfg.gbdt:
        jobs.append(TransferJob(f"{a}: GBDT (no tokens)", "later period", a, base=base, model="gbdt"))
    if cfg.period is not None:
        early = SourcePlan(f"{a}-first-{round(100 * cfg.period)}pct", a, period=cfg.period)
        sources.append(early)
        jobs.append(TransferJob(f"{a}: +{a} tokens (source frozen after the first {cfg.period:.0%} of the train period)", "later period", a, source=early.name, base=base))
    if cfg.task and has_conversions(df):
        click_only = SourcePlan(f"{a}-click-only", a, click_only=True)
        sources.append(click_only)
        base = f"{a} CVR: base (no tokens)"
        jobs += [
            TransferJob(base, "task", a, "conversion", base=base),
            TransferJob(f"{a} CVR: +{a} tokens (source trained on click + conversion)", "task", a, "conversion", source=a, base=base),
            TransferJob(f"{a} CVR: +{a} tokens (source trained on click only)", "task", a, "conversion", source=click_only.name, base=base),
        ]
        if cfg.gbdt:
            jobs.append(TransferJob(f"{a} CVR: GBDT (no tokens)", "task", a, "conversion", base=base, model="gbdt"))
    return sources, jobs


# -- sources and stores ------------------------------------------------------------------------------
def period_split(rows: pd.DataFrame, period: float, valid_share: float = 0.1) -> pd.Series:
    """Split labels for a source frozen after the first ``period`` of the rows' train period: the earliest
    ``1 - valid_share`` of that stretch is ``train``, the rest ``valid``; every later train or valid row is
    ``later`` (never read by the source); ``test`` rows stay ``test`` (the source's own test score)."""
    split = rows[SPLIT_COLUMN].to_numpy()
    ts = rows["ts"].to_numpy(np.float64)
    tr = ts[split == "train"]
    lo, hi = tr.min(), tr.max()
    cut, vcut = lo + period * (hi - lo), lo + period * (1 - valid_share) * (hi - lo)
    out = np.where(split == "test", "test", np.where(split != "train", LATER, np.where(ts < vcut, "train", np.where(ts < cut, "valid", LATER))))
    return pd.Series(out, index=rows.index, name=SPLIT_COLUMN)


def source_rows(df: pd.DataFrame, src: SourcePlan) -> pd.DataFrame:
    """The rows a source trains and is scored on: its domain only, relabelled for an early-period source."""
    rows = df[df["domain"] == src.domain].reset_index(drop=True)
    if src.period is not None:
        rows[SPLIT_COLUMN] = period_split(rows, src.period)
    return rows


def train_transfer_source(df: pd.DataFrame, schema: Schema, src: SourcePlan, cfg: TransferConfig) -> SourceBundle:
    """Train ``src`` on its domain's rows only; its metrics record what it saw (``metrics['trained_on']``)."""
    rows = source_rows(df, src)
    model = {**cfg.source_model, **({"conversion_weight": 0.0} if src.click_only else {})}
    train = TrainConfig(**{**cfg.source_train, "seed": cfg.source_seed, "threads": cfg.threads, "progress": False})
    bundle = train_source(rows, schema, cfg.source_kind, model or None, train, n_boot=0)
    seen = rows[rows[SPLIT_COLUMN].isin(("train", "valid"))]
    bundle.metrics["trained_on"] = {
        "source": src.name,
        "domains": sorted(map(str, seen["domain"].unique())),
        "train_rows": int((rows[SPLIT_COLUMN] == "train").sum()),
        "valid_rows": int((rows[SPLIT_COLUMN] == "valid").sum()),
        "last_ts_seen": int(seen["ts"].max()),
        "period": src.period,
        "click_only": src.click_only,
    }
    return bundle


def store_rows(df: pd.DataFrame, src: SourcePlan) -> pd.DataFrame:
    """A source's store holds every instance (all periods) of its domain and nothing else."""
    return df[df["domain"] == src.domain]


def target_rows(df: pd.DataFrame, domain: str, source_domain: str, shared_users: bool) -> pd.DataFrame:
    """A downstream ranker's rows: its domain; for another domain than the source's, with ``shared_users``, only
    users who also have rows in the source domain (the users cross-domain tokens can exist for)."""
    rows = df[df["domain"] == domain]
    if shared_users and domain != source_domain:
        rows = rows[rows["user_id"].isin(df.loc[df["domain"] == source_domain, "user_id"].unique())]
    return rows.reset_index(drop=True)


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class TransferResult:
    results: pd.DataFrame  # one row per (job, seed, split): auc, gauc, logloss, ...
    table: pd.DataFrame  # per job: mean metrics and paired relative deltas vs its base (tuples: mean, lo, hi)
    markdown: str

    def flat(self) -> pd.DataFrame:
        return flat_table(self.table)


def data_fingerprint(df: pd.DataFrame) -> str:
    cols = [c for c in ("instance_id", "user_id", "ts", "domain", "click", SPLIT_COLUMN) if c in df.columns]
    return f"{len(df)}-{int(pd.util.hash_pandas_object(df[cols], index=False).sum()) & (2**64 - 1):016x}"


def work_key(df: pd.DataFrame, cfg: TransferConfig) -> str:
    """A short key of (data, config without seeds): the default work folder name of a step run."""
    blob = json.dumps({"data": data_fingerprint(df), "config": cfg.identity()}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _check_work(work: Path, df: pd.DataFrame, cfg: TransferConfig) -> None:
    ident = {"data": data_fingerprint(df), "config": cfg.identity()}
    path = work / CONFIG_FILE
    if path.is_file():
        prev = json.loads(path.read_text())
        if prev != json.loads(json.dumps(ident, default=str)):
            raise ValueError(f"{work} holds a transfer run of other data or another config ({path}); use another work folder or remove it")
    else:
        work.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(ident, indent=2, default=str))


def _job_rows(job: TransferJob, seed: int, m: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"spec": job.name, "base": job.base, "seed": seed, "split": split, **{k: m[split][k] for k in METRICS}, "n": m[split]["n"],
         "section": job.section, "domain": job.domain, "task": job.task, "tokens": job.source or "", "token_input": job.token_input,
         "params": m["params"], "samples_per_s": m["samples_per_s"], "best_epoch": m["best_epoch"]}
        for split in ("valid", "test")
    ]  # fmt: skip


def spec_of(job: TransferJob, cfg: TransferConfig) -> DownstreamSpec:
    """The model of a job: the configured ranker, with the IAT branch (reading ``job.source``'s store) or without;
    or the GBDT on the base inputs + clicked-item aggregates (+ ``job.source``'s pooled tokens)."""
    if job.model == "gbdt":
        return DownstreamSpec(job.name, "gbdt", {"inputs": "tokens" if job.source else "seq"}, job.source, cfg.L, cfg.base_L)
    if job.source is None:
        return DownstreamSpec(job.name, "ranker", {**cfg.ranker, "iat": None}, None, cfg.L, cfg.base_L)
    config = {**cfg.ranker, **({} if job.token_input else {"token_input": False})}
    return DownstreamSpec(job.name, "ranker", config, job.source, cfg.L, cfg.base_L)


def run_transfer(
    df: pd.DataFrame,
    schema: Schema,
    cfg: TransferConfig | dict[str, Any] | None,
    work: str | Path,
    log: Callable[[str], None] | None = print,
    title: str | None = None,
) -> TransferResult:
    """Train the sources (once), materialize their stores, run every (job, seed) not yet in the work folder's
    results, and return the per-seed results, the relative table and its markdown (also written to table.md).

    ``df`` is a split log (``split`` column, ``iat.data.split.add_split``) with a ``domain`` column."""
    cfg = cfg if isinstance(cfg, TransferConfig) else TransferConfig.from_dict(cfg)
    if SPLIT_COLUMN not in df.columns:
        raise ValueError(f"the log has no '{SPLIT_COLUMN}' column: run the time split first")
    work = Path(work)
    _check_work(work, df, cfg)
    say = log or (lambda _m: None)
    sources, jobs = plan(cfg, df)
    a, _ = resolve_domains(cfg, df)

    bundles: dict[str, dict[str, Any]] = {}
    for src in sources:
        folder = work / "sources" / src.name
        if not (folder / "config.json").is_file():
            say(f"[transfer] training source '{src.name}' on {src.domain} rows only")
            save_bundle(train_transfer_source(df, schema, src, cfg), folder)
        if not (work / "stores" / src.name / "manifest.json").is_file():
            materialize(load_bundle(folder), store_rows(df, src), work / "stores" / src.name, run_id=f"transfer:{src.name}", overwrite=True, progress=False)
        bundles[src.name] = json.loads((folder / "metrics.json").read_text())
    stores = {s.name: TokenStore.open(work / "stores" / s.name) for s in sources}

    out = work / RESULTS_FILE
    done = set()
    if out.is_file():
        prev = pd.read_csv(out)
        done = set(zip(prev["spec"], prev["seed"]))
    data: dict[str, DownstreamData] = {}
    for seed in cfg.seeds:
        for job in jobs:
            if (job.name, seed) in done:
                continue
            if job.domain not in data:
                data[job.domain] = DownstreamData.prepare(target_rows(df, job.domain, a, cfg.shared_users), schema)
            train = TrainConfig(**{**cfg.train, "seed": seed, "threads": cfg.threads, "progress": False})
            _, m = train_downstream(data[job.domain], spec_of(job, cfg), stores.get(job.source) if job.source else None, train, task=job.task)
            append_csv_rows(out, _job_rows(job, seed, m))
            say(f"[transfer] seed {seed} {job.name}: test {job.task} auc {m['test']['auc']:.4f}")

    results = pd.read_csv(out)
    results = results[results["seed"].isin(cfg.seeds)].drop_duplicates(["spec", "seed", "split"], keep="last").reset_index(drop=True)
    table = transfer_table(results, jobs)
    notes = _notes(df, cfg, sources, jobs, bundles, stores, a)
    md = format_transfer(table, notes, title)
    (work / TABLE_FILE).write_text(md)
    return TransferResult(results, table, md)


# -- tables ---------------------------------------------------------------------------------------------
def transfer_table(results: pd.DataFrame, jobs: list[TransferJob], split: str = "test") -> pd.DataFrame:
    """Per job (in plan order): mean AUC / GAUC / LogLoss over seeds and the paired relative deltas vs its base."""
    table = relative_table(MatrixRun(results, {}), [j.name for j in jobs], split)
    meta = pd.DataFrame([{"section": j.section, "domain": j.domain, "task": j.task, "tokens": j.source or "", "token_input": j.token_input} for j in jobs])
    return pd.concat([meta, table], axis=1)


def flat_table(table: pd.DataFrame) -> pd.DataFrame:
    """The table with each delta (mean, lo, hi) in three float columns (for parquet / ZenML)."""
    out = table.copy()
    for k in METRICS:
        col = out.pop(f"d_{k}") if f"d_{k}" in out.columns else pd.Series([None] * len(out))
        cells = [v if isinstance(v, tuple) else (np.nan, np.nan, np.nan) for v in col]
        out[f"d_{k}"], out[f"d_{k}_lo"], out[f"d_{k}_hi"] = (np.array([c[i] for c in cells], dtype=np.float64) for i in range(3))
    return out


def section_title(section: str, table: pd.DataFrame) -> str:
    rows = table[table["section"] == section]
    if section == "cross-domain":
        src = sorted({t for t in rows["tokens"] if t} - set(rows["domain"]))
        return f"Cross-domain: source trained only on {', '.join(src)} rows, its tokens reused unchanged by fresh rankers in {', '.join(dict.fromkeys(rows['domain']))} (click)"
    if section == "later period":
        return f"In-domain, later period ({rows['domain'].iloc[0]}, click): a source frozen early vs one trained on the whole train period"
    return f"In-domain, another task ({rows['domain'].iloc[0]}, conversion: pCVR on clicked rows): a click-only source vs a click + conversion source"


def format_transfer(table: pd.DataFrame, notes: list[str] | None = None, title: str | None = None) -> str:
    """Markdown: one table per section (``iat.experiments.format_table``), then the notes."""
    parts = [f"### {title}", ""] if title else []
    seeds = sorted(set(int(s) for s in table["seeds"]))
    for section in SECTIONS:
        rows = table[table["section"] == section]
        if len(rows):
            parts += [format_table(rows.drop(columns=["section", "domain", "task", "tokens", "token_input"]), section_title(section, table)), ""]
    n = "/".join(map(str, seeds))
    spread = "one seed: no interval" if n == "1" else "95% t-interval over seeds"
    parts.append(f"Each Δ: mean over {n} seed(s) of the paired relative change vs the base row above it (same domain, task and seed), {spread}.")
    if notes:
        parts += [""] + [f"- {n}" for n in notes]
    return "\n".join(parts) + "\n"


def _notes(
    df: pd.DataFrame, cfg: TransferConfig, sources: list[SourcePlan], jobs: list[TransferJob], metrics: dict[str, dict[str, Any]], stores: dict[str, TokenStore], a: str
) -> list[str]:
    """What the table needs to be read: what each source saw and scores, token coverage, the oracle."""
    notes = []
    for s in sources:
        m, seen = metrics[s.name], metrics[s.name].get("trained_on", {})
        what = "click only" if s.click_only else "click + conversion" if has_conversions(df) else "click"
        period = f", first {s.period:.0%} of the train period (last ts seen {seen.get('last_ts_seen')})" if s.period else ""
        notes.append(
            f"source `{s.name}` ({cfg.source_kind}, seed {cfg.source_seed}): trained on {'/'.join(seen.get('domains', [s.domain]))} rows only"
            f"{period}, {what}; {seen.get('train_rows', 0):,} train rows; test AUC on {s.domain}: {m['test']['auc']:.4f}"
        )
    domain_of = {s.name: s.domain for s in sources}
    pairs = {(domain_of[j.source], j.domain): j.source for j in jobs if j.source is not None}  # coverage depends on the store's domain only
    for (store_domain, domain), name in pairs.items():
        rows = target_rows(df, domain, a, cfg.shared_users)
        rows = rows[rows[SPLIT_COLUMN] == "test"]
        lengths = stores[name].fetch_before(rows["user_id"].to_numpy(), rows["ts"].to_numpy(), cfg.L).lengths
        notes.append(f"{store_domain} tokens for {domain} test requests: {np.mean(lengths > 0):.1%} have at least one, mean {lengths.mean():.1f} of L={cfg.L}")
    if cfg.shared_users:
        notes.append(f"target-domain rankers train and score on the rows of users who also have {a} rows (shared users)")
    if "p_click" in df.columns:
        orc = {d: oracle_auc(g) for d, g in df.groupby("domain")}
        notes.append("oracle test AUC (the generator's true p_click): " + ", ".join(f"{d} {v:.4f}" for d, v in orc.items()))
    return notes

