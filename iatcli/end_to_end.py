"""The ``end_to_end`` pipeline from a config file: ``iat demo``, ``iat run end_to_end``, ``iat deploy-pipeline``.

The file's ``end_to_end:`` section holds the run parameters (those of ``pipelines.end_to_end.end_to_end``); the
source model's architecture and training come from its ``source:`` section, the token dtype from ``tokens:``,
the rankers' architecture and training from ``downstream:`` — the sections ``iat run source|tokens|downstream``
read, so the stage pipelines and the end-to-end pipeline train the same models.
"""

from __future__ import annotations

from typing import Any

from iatcli.config import load_config

# Kinds whose bundles encode dense instance tokens a ranker's F_iat reads (logreg has none; HGAQ codes feed the SIF-Mixer).
E2E_SOURCE_KINDS = ("temporal", "user_order")
E2E_KEYS = ("dataset", "users", "seed", "path", "max_quarantine_share", "reports_dir", "kind", "L", "seeds", "epochs", "n_boot")


def e2e_plan(config: str | None, overrides: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(run parameters, binding) for ``end_to_end``: the binding is ``end_to_end_pipeline``'s keyword arguments."""
    from iatcli.runs import downstream_params, source_params, tokens_params, transfer_params

    params = load_config(config, "end_to_end", overrides or {})
    unknown = sorted(set(params) - set(E2E_KEYS))
    if unknown:
        raise ValueError(f"config section 'end_to_end': unknown keys {unknown}; known: {sorted(E2E_KEYS)}")
    src = load_config(config, "source", {})
    kind = params.setdefault("kind", src.get("model", "user_order"))
    if kind not in E2E_SOURCE_KINDS:
        raise ValueError(f"end_to_end: kind must be one of {E2E_SOURCE_KINDS} (a token source for the +IAT ranker), got '{kind}'")
    if params.get("seeds") is not None:
        params["seeds"] = [int(s) for s in (params["seeds"] if isinstance(params["seeds"], list) else [params["seeds"]])]
    # the source section's data keys (dataset, users...) belong to `iat run source`; here the end_to_end section rules
    sp = source_params({k: v for k, v in src.items() if k in ("models", "train", "train_by_model")} | {"model": kind})
    tok = tokens_params(load_config(config, "tokens", {}))
    down = {k: v for k, v in load_config(config, "downstream", {}).items() if k not in ("name", "source", "source_version")}
    base = downstream_params({**down, "iat": None, "tokens": None})
    iat = downstream_params({**down, "iat": down.get("iat") or "transformer", "tokens": kind})
    params.setdefault("L", iat["spec"]["L"])
    from iat.data.registry import dataset_name

    binding = {
        "kind": kind,
        "dataset": dataset_name(params.get("dataset", "synthetic"), params.get("path")),
        "base_spec": base["spec"],
        "iat_spec": iat["spec"],
        "source_model_config": sp["model_config"],
        "source_train_config": sp["train_config"],
        "ranker_train_config": iat["train_config"],
        "dtype": tok.get("dtype"),
        "post_sit": bool(tok.get("post_sit", False)),
        # the transfer section's data keys belong to `iat run transfer`; end_to_end transfers on its own split log
        "transfer_config": transfer_params(load_config(config, "transfer", {}) or {"seeds": [0]})["config"],
    }
    return params, binding


# end_to_end parameter -> the `iat run` flag that sets it (``--model`` is the source kind)
CLI_PARAMS = {"dataset": "dataset", "users": "users", "seed": "seed", "path": "path", "kind": "model", "L": "L", "seeds": "seeds", "epochs": "epochs"}
CLI_FLAGS = tuple(CLI_PARAMS.values())


def cli_overrides(a: Any) -> dict[str, Any]:
    """``iat run end_to_end`` flags -> end_to_end parameters."""
    return {k: getattr(a, attr, None) for k, attr in CLI_PARAMS.items()}


def run_end_to_end(config: str | None, overrides: dict[str, Any] | None = None) -> int:
    """Run ``end_to_end`` on the local stack, print its steps (cached or not) and its result table."""
    from zenml.client import Client

    from iat.report import format_result_table
    from pipelines.end_to_end import end_to_end_pipeline

    params, binding = e2e_plan(config, overrides)
    print(f"end_to_end: {params}")
    run = Client().get_pipeline_run(end_to_end_pipeline(**binding)(**params).id)
    print(f"pipeline 'end_to_end' run {run.name}: {run.status.value}")
    for name, s in run.steps.items():
        print(f"  step {name:<20} {s.status.value}")
    if run.status.value != "completed":
        return 1
    table = run.steps["result_table"].outputs["result_table"][0].load()
    print_models(run)
    print()
    print(format_result_table(table))
    return 0


def print_models(run: Any) -> None:
    """The model versions the run registered (what the dashboard's Models page shows)."""
    seen = set()
    for mv in [run.model_version] + [s.model_version for s in run.steps.values()]:
        if mv is not None and mv.id not in seen:
            seen.add(mv.id)
            print(f"  model {mv.model.name} version {mv.name}")
