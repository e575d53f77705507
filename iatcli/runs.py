"""Run a ZenML pipeline by name with a config section, and print what it produced."""

from __future__ import annotations

from typing import Any, Callable


def _pipelines() -> dict[str, Callable[..., Any]]:
    from pipelines.data import data_pipeline
    from pipelines.source import source_pipeline

    return {"data": data_pipeline, "source": source_pipeline}


SOURCE_KEYS = ("dataset", "users", "seed", "path", "max_quarantine_share", "reports_dir", "n_boot")


def source_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``source:`` config section -> source pipeline parameters.

    ``model`` picks the kind; ``models.<kind>`` is that kind's model config; ``train`` is the TrainConfig, with
    ``epochs`` on top; ``seed`` seeds both the data and the training run.
    """
    unknown = sorted(set(cfg) - set(SOURCE_KEYS) - {"model", "models", "train", "epochs"})
    if unknown:
        raise ValueError(f"config section 'source': unknown keys {unknown}")
    kind = cfg.get("model", "temporal")
    train = dict(cfg.get("train") or {})
    if cfg.get("epochs") is not None:
        train["epochs"] = int(cfg["epochs"])
    if cfg.get("seed") is not None:
        train["seed"] = int(cfg["seed"])
    params = {k: cfg[k] for k in SOURCE_KEYS if k in cfg}
    return {"kind": kind, "model_config": (cfg.get("models") or {}).get(kind) or None, "train_config": train, **params}


def run_pipeline(name: str, cfg: dict[str, Any]) -> int:
    from zenml.client import Client

    pipes = _pipelines()
    if name not in pipes:
        raise ValueError(f"unknown pipeline '{name}': expected one of {sorted(pipes)}")
    run = pipes[name](**(source_params(cfg) if name == "source" else cfg))
    run = Client().get_pipeline_run(run.id)
    print(f"pipeline '{name}' run {run.name}: {run.status.value}")
    for step_name, s in run.steps.items():
        print(f"  step {step_name:<12} {s.status.value}")
    if name == "data":
        _print_data_summary(run)
    if name == "source" and run.status.value == "completed":
        _print_source_summary(run)
    return 0 if run.status.value == "completed" else 1


def _print_data_summary(run: Any) -> None:
    from iat.data.split import split_counts

    clean = run.steps["validate"].outputs["clean_instances"][0].load()
    quarantine = run.steps["validate"].outputs["quarantined_instances"][0].load()
    raw_rows = len(clean) + len(quarantine)
    print(f"rows: {raw_rows:,} in, {len(clean):,} clean, {len(quarantine):,} quarantined")
    split_df = run.steps["split"].outputs["split_instances"][0].load()
    print("rows per domain and split:")
    for dom, c in split_counts(split_df).items():
        print(f"  {dom:<8} " + "  ".join(f"{k}={v:,}" for k, v in c.items()))


def _print_source_summary(run: Any) -> None:
    art = run.steps["train_source"].outputs["source_bundle"][0]
    bundle = art.load()
    print(f"source model '{bundle.kind}' config {bundle.config['config_hash']} version {bundle.config['version']}, best epoch {bundle.metrics['best_epoch']}, {bundle.metrics['samples_per_s']:,.0f} samples/s")
    for split in ("valid", "test"):
        m = bundle.metrics[split]
        print(f"  {split:<5} " + "  ".join(f"{k} {m[k]:.4f} [{m[k + '_lo']:.4f}, {m[k + '_hi']:.4f}]" if k + "_lo" in m else f"{k} {m[k]:.4f}" for k in ("auc", "gauc", "logloss")))
    print(f"bundle artifact: {art.uri}")
