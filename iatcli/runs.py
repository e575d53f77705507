"""Run a ZenML pipeline by name with a config section, and print what it produced."""

from __future__ import annotations

import inspect
import typing
from typing import Any, Callable


def _pipelines() -> dict[str, Callable[..., Any]]:
    from pipelines.data import data_pipeline
    from pipelines.downstream import downstream_pipeline
    from pipelines.source import source_pipeline
    from pipelines.tokens import tokens_pipeline
    from pipelines.transfer import transfer_pipeline

    return {"data": data_pipeline, "source": source_pipeline, "tokens": tokens_pipeline, "downstream": downstream_pipeline, "transfer": transfer_pipeline}


SOURCE_KEYS = ("dataset", "users", "seed", "path", "max_quarantine_share", "reports_dir", "n_boot", "processes")


def source_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``source:`` config section -> source pipeline parameters.

    ``model`` picks the kind; ``models.<kind>`` is that kind's model config; ``train`` is the TrainConfig, with
    ``train_by_model.<kind>`` (e.g. a tuned learning rate) and then ``epochs`` on top; ``seed`` seeds both the
    data and the training run.
    """
    unknown = sorted(set(cfg) - set(SOURCE_KEYS) - {"model", "models", "train", "train_by_model", "epochs"})
    if unknown:
        raise ValueError(f"config section 'source': unknown keys {unknown}")
    kind = cfg.get("model", "temporal")
    train = {**(cfg.get("train") or {}), **((cfg.get("train_by_model") or {}).get(kind) or {})}
    if cfg.get("epochs") is not None:
        train["epochs"] = int(cfg["epochs"])
    if cfg.get("seed") is not None:
        train["seed"] = int(cfg["seed"])
    params = {k: cfg[k] for k in SOURCE_KEYS if k in cfg}
    return {"kind": kind, "model_config": (cfg.get("models") or {}).get(kind) or None, "train_config": train, **params}


# dataset / path: which data set's source model (iat-source-<data set>-<kind>) to read
TOKENS_KEYS = ("dataset", "path", "source", "source_version", "dtype", "post_sit", "shards", "online_store", "retention")
DOWNSTREAM_KEYS = (
    "dataset", "path", "name", "seq", "iat", "tokens", "L", "base_L", "model", "config", "source", "source_version", "train", "epochs", "n_boot", "processes",
)  # fmt: skip


def _check_keys(section: str, cfg: dict[str, Any], known: tuple[str, ...]) -> None:
    unknown = sorted(set(cfg) - set(known))
    if unknown:
        raise ValueError(f"config section '{section}': unknown keys {unknown}; known: {sorted(known)}")


def tokens_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``tokens:`` section: which source model version to materialize, in which dtype."""
    _check_keys("tokens", cfg, TOKENS_KEYS)
    return {k: cfg[k] for k in TOKENS_KEYS if cfg.get(k) is not None}


def downstream_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``downstream:`` section -> a DownstreamSpec dict (``seq``/``iat`` fill the ranker config) + run options."""
    _check_keys("downstream", cfg, DOWNSTREAM_KEYS)
    model = cfg.get("model", "ranker")
    config = dict(cfg.get("config") or {})
    if model == "ranker":
        config.setdefault("seq", cfg.get("seq", "din"))
        if cfg.get("iat"):
            config.setdefault("iat", cfg["iat"])
    tokens = cfg.get("tokens") if (model != "ranker" or config.get("iat")) else None
    name = cfg.get("name") or "-".join(x for x in (tokens or "base", config.get("iat") if model == "ranker" else model, config.get("seq")) if x)
    spec = {"name": name, "model": model, "config": config, "tokens": tokens, "L": int(cfg.get("L", 32)), "base_L": int(cfg.get("base_L", 32))}
    train = dict(cfg.get("train") or {})
    if cfg.get("epochs") is not None:
        train["epochs"] = int(cfg["epochs"])
    data = {k: cfg[k] for k in ("dataset", "path") if cfg.get(k) is not None}
    return {
        "spec": spec, "source": cfg.get("source") or tokens or "user_order", "source_version": cfg.get("source_version"), **data,
        "train_config": train, "n_boot": int(cfg.get("n_boot", 200)), "processes": int(cfg.get("processes", 1)),
    }  # fmt: skip


TRANSFER_PIPELINE_KEYS = ("dataset", "users", "seed", "path", "max_quarantine_share", "reports_dir", "work_dir")


def transfer_params(cfg: dict[str, Any]) -> dict[str, Any]:
    """The ``transfer:`` section -> transfer pipeline parameters: the data keys, and the rest as the
    ``iat.transfer.TransferConfig`` dict (``--model`` picks the source kind, ``--epochs`` the ranker epochs)."""
    from iat.transfer import TransferConfig

    rest = {k: v for k, v in cfg.items() if k not in TRANSFER_PIPELINE_KEYS}
    if rest.get("model") is not None:
        rest["source_kind"] = rest.pop("model")
    if rest.get("epochs") is not None:
        rest["train"] = {**(rest.get("train") or {}), "epochs": int(rest.pop("epochs"))}
    TransferConfig.from_dict(rest)  # unknown keys fail here, before any step runs
    return {**{k: cfg[k] for k in TRANSFER_PIPELINE_KEYS if k in cfg}, "config": rest}


def check_arguments(name: str, pipe: Any, params: dict[str, Any]) -> None:
    """Refuse parameters the pipeline does not take, naming them (ZenML's own error is a pydantic dump)."""
    fn = getattr(pipe, "entrypoint", pipe)
    sig = inspect.signature(fn)
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        return
    unknown = sorted(set(params) - set(sig.parameters))
    if unknown:
        flags = ", ".join(f"--{k.replace('_', '-')}" for k in unknown)
        raise ValueError(f"iat run {name} does not take {flags} (config section '{name}' or the command line); it takes {sorted(sig.parameters)}")
    from pydantic import TypeAdapter, ValidationError

    hints = typing.get_type_hints(fn)
    for k, v in params.items():
        if k in hints:
            try:
                TypeAdapter(hints[k]).validate_python(v)
            except ValidationError as e:
                raise ValueError(f"iat run {name}: parameter '{k}' {e.errors()[0]['msg'].lower()}, got {v!r}") from None


def run_pipeline(name: str, cfg: dict[str, Any]) -> int:
    from zenml.client import Client

    pipes = _pipelines()
    if name not in pipes:
        raise ValueError(f"unknown pipeline '{name}': expected one of {sorted(pipes)}")
    params = {"source": source_params, "tokens": tokens_params, "downstream": downstream_params, "transfer": transfer_params}.get(name, dict)(cfg)
    check_arguments(name, pipes[name], params)
    if isinstance(params.get("train_config"), dict):
        from iat.train import TrainConfig

        try:  # a bad value (epochs 0, an unknown key) fails here, before any step runs
            TrainConfig(**params["train_config"])
        except TypeError as e:
            raise ValueError(f"config section '{name}', train: {e}") from None
    run = pipes[name](**params)
    run = Client().get_pipeline_run(run.id)
    print(f"pipeline '{name}' run {run.name}: {run.status.value}")
    for step_name, s in run.steps.items():
        print(f"  step {step_name:<12} {s.status.value}")
    if name == "data":
        _print_data_summary(run)
    if name == "source" and run.status.value == "completed":
        _print_source_summary(run)
    if name == "tokens" and run.status.value == "completed":
        from iat.tokens import format_inspection, inspect_store

        # materialize_tokens, or publish_tokens when sharded: whichever step made the token store
        store = next(s.outputs["token_store"][0] for s in run.steps.values() if "token_store" in s.outputs)
        print(format_inspection(inspect_store(store.load()["path"])))
    if name == "transfer" and run.status.value == "completed":
        print(run.steps["transfer_evaluation"].outputs["transfer_table"][0].load())
    if name == "downstream" and run.status.value == "completed":
        bundle = run.steps["train_ranker"].outputs["ranker"][0].load()
        print(f"ranker '{bundle.spec.name}' version {bundle.config['version']} (tokens: {bundle.config['token_source'] or 'none'})")
        _print_metrics(bundle.metrics)
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


def _print_metrics(metrics: dict[str, Any]) -> None:
    for split in ("valid", "test"):
        m = metrics[split]
        print(f"  {split:<5} " + "  ".join(f"{k} {m[k]:.4f} [{m[k + '_lo']:.4f}, {m[k + '_hi']:.4f}]" if m.get(k + "_lo") is not None else f"{k} {m[k]:.4f}" for k in ("auc", "gauc", "logloss")))


def _print_source_summary(run: Any) -> None:
    art = run.steps["train_source"].outputs["source_bundle"][0]
    bundle = art.load()
    print(f"source model '{bundle.kind}' config {bundle.config['config_hash']} version {bundle.config['version']}, best epoch {bundle.metrics['best_epoch']}, {bundle.metrics['samples_per_s']:,.0f} samples/s")
    _print_metrics(bundle.metrics)
    print(f"bundle artifact: {art.uri}")
