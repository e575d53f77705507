"""``iat dashboard`` (the local ZenML server and dashboard) and ``iat deploy-pipeline`` (a pipeline as an HTTP service
with the local deployer: ``POST /invoke`` with parameters starts a run). ``register(subparsers)`` adds them.

Everything binds 127.0.0.1 and lives in the project's ZenML config (``ZENML_CONFIG_PATH``, set by
``iatcli.env``: ``<project or IAT_HOME>/.zenml``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from iatcli.end_to_end import E2E_SOURCE_KINDS

HOST = "127.0.0.1"
DASHBOARD_PORT = 8237
DEPLOY_PORT = 8300
DEPLOYER = "iat-local-deployer"
STACK = "iat-local"
DEPLOYABLE = ("end_to_end", "data")


def _zenml(*args: str) -> list[str]:
    """The ``zenml`` command of this environment (the console script beside the interpreter)."""
    exe = Path(sys.executable).parent / "zenml"
    return [str(exe), *args] if exe.is_file() else [shutil.which("zenml") or "zenml", *args]


def _cmd_dashboard(a: argparse.Namespace) -> int:
    if a.stop:
        return subprocess.call(_zenml("logout", "--local"))
    args = ["login", "--local", "--ip-address", HOST, "--port", str(a.port)] + (["--restart"] if a.restart else [])
    code = subprocess.call(_zenml(*args))
    if code == 0:
        skip_onboarding_survey()
        print(f"ZenML dashboard: http://{HOST}:{a.port}  (ZENML_CONFIG_PATH={os.environ.get('ZENML_CONFIG_PATH')})")
        print("The iat commands now talk to this server; `iat dashboard --stop` stops it and goes back to the local store.")
    return code


def skip_onboarding_survey() -> None:
    """The local server runs without authentication, as its one default user; on first visit its dashboard asks that
    user for a name and e-mail (ZenML's newsletter sign-up) before showing anything. Answer it once: no e-mail, no
    opt-in, survey done, so the dashboard opens on the runs."""
    from zenml.client import Client
    from zenml.models import UserUpdate
    from zenml.zen_stores.rest_zen_store import RestZenStore

    client = Client()
    user = client.active_user
    meta = dict(user.user_metadata or {})
    if isinstance(client.zen_store, RestZenStore) and (user.email_opted_in is None or not meta.get("finished_onboarding_survey")):
        # PUT /current-user: the one endpoint that sets a user's own opt-in (`Client.update_user` does not reach it)
        client.zen_store.put("/current-user", body=UserUpdate(email_opted_in=False, user_metadata={**meta, "finished_onboarding_survey": True}))


# ---------------------------------------------------------------------------------------------------- deployments


def ensure_deployer_stack() -> str:
    """Make the active stack one with a deployer, idempotently: if the active stack has none, register the local
    deployer ``iat-local-deployer`` and a stack ``iat-local`` = the active stack's orchestrator and artifact store
    + that deployer (once), and activate it. Returns the active stack's name."""
    from zenml.client import Client
    from zenml.enums import StackComponentType

    client = Client()
    active = client.active_stack_model
    if active.components.get(StackComponentType.DEPLOYER):
        return active.name
    try:
        client.get_stack(STACK)
    except KeyError:
        try:
            client.get_stack_component(StackComponentType.DEPLOYER, DEPLOYER)
        except KeyError:
            client.create_stack_component(name=DEPLOYER, flavor="local", component_type=StackComponentType.DEPLOYER, configuration={})
        comps = {t: active.components[t][0].id for t in (StackComponentType.ORCHESTRATOR, StackComponentType.ARTIFACT_STORE)}
        client.create_stack(name=STACK, components={**comps, StackComponentType.DEPLOYER: DEPLOYER})
        print(f"registered ZenML stack '{STACK}': the orchestrator and artifact store of '{active.name}' + local deployer '{DEPLOYER}'")
    client.activate_stack(STACK)
    print(f"active ZenML stack: '{STACK}'")
    return STACK


def deployable_pipeline(name: str, config: str | None, overrides: dict[str, Any], port: int) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(pipeline bound for deployment, its deploy-time parameters, the ZenML run configuration as a dict)."""
    from iatcli.config import load_config

    settings = {"deployer.local": {"port": port, "address": HOST, "allocate_port_if_busy": True}}
    if name == "end_to_end":
        from iatcli.end_to_end import e2e_plan
        from pipelines.end_to_end import end_to_end_pipeline, run_configuration

        params, binding = e2e_plan(config, overrides)
        return end_to_end_pipeline(**binding, settings=settings), params, {**run_configuration(**binding), "settings": settings}
    if name == "data":
        from pipelines.data import data_pipeline

        params = load_config(config, "data", overrides)
        return data_pipeline.with_options(settings=settings), params, {"settings": settings}
    raise ValueError(f"cannot deploy '{name}': deployable pipelines are {list(DEPLOYABLE)}")


def deploy(name: str, deployment: str, config: str | None, overrides: dict[str, Any], port: int = DEPLOY_PORT, timeout: int | None = None) -> Any:
    """Deploy pipeline ``name`` as deployment ``deployment`` (replacing one of that name) with the local deployer;
    writes the equivalent ``zenml pipeline deploy`` config under ``<home>/deployments/``. Returns the deployment."""
    import yaml

    ensure_deployer_stack()
    pipe, params, run_config = deployable_pipeline(name, config, overrides, port)
    out = Path(os.environ.get("IAT_HOME") or ".").resolve() / "deployments" / f"{deployment}.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(_plain({"parameters": params, **run_config}), sort_keys=False))
    print(f"deploying pipeline '{name}' as '{deployment}' with parameters {params}")
    print(f"(the same with the ZenML CLI: zenml pipeline deploy {_source(name)} -n {deployment} -c {out} --update)")
    return pipe.deploy(deployment_name=deployment, timeout=timeout, **params)


def _source(name: str) -> str:
    return {"end_to_end": "pipelines.end_to_end.end_to_end", "data": "pipelines.data.data_pipeline"}[name]


def _plain(x: Any) -> Any:
    """Plain YAML-able values (tuples -> lists)."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x


def example_curl(url: str, params: dict[str, Any]) -> str:
    body = json.dumps({"parameters": params})
    return f"curl -s -X POST {url}/invoke -H 'Content-Type: application/json' -d '{body}'"


def deprovision(deployment: str, delete: bool = True) -> None:
    """Stop the deployment's server (and forget the deployment unless ``delete`` is False)."""
    from zenml.client import Client

    client = Client()
    if delete:
        client.delete_deployment(deployment, force=True)
    else:
        client.deprovision_deployment(deployment)


def _cmd_deploy(a: argparse.Namespace) -> int:
    from zenml.client import Client

    deployment = a.name or a.pipeline
    if a.deprovision:
        try:
            Client().get_deployment(deployment)
        except KeyError:
            print(f"no deployment '{deployment}'")
            return 0
        deprovision(deployment, delete=not a.keep)
        print(f"deployment '{deployment}' {'deprovisioned' if a.keep else 'deprovisioned and deleted'}")
        return 0
    overrides = {"dataset": a.dataset, "path": a.path, "users": a.users, "seed": a.seed, "kind": a.kind, "L": a.L, "seeds": a.seeds, "epochs": a.epochs}
    if a.pipeline != "end_to_end":
        overrides = {k: v for k, v in overrides.items() if k in ("dataset", "path", "users", "seed")}
    d = deploy(a.pipeline, deployment, a.config, overrides, port=a.port, timeout=a.timeout)
    status = str(getattr(d.status, "value", d.status))
    if status != "running":
        print(f"deployment '{deployment}' is {status}; logs: zenml deployment logs {deployment}", file=sys.stderr)
        return 1
    params = (d.snapshot.pipeline_spec.parameters if d.snapshot and d.snapshot.pipeline_spec else None) or {}
    print(f"deployment '{deployment}' of pipeline '{a.pipeline}' is running at {d.url}")
    print(f"  API docs: {d.url}/docs   health: {d.url}/health   info: {d.url}/info")
    print("start a run with new parameters (those left out take the defaults of the pipeline's signature):")
    print(f"  {example_curl(d.url, params)}")
    print(f"stop it: iat deploy-pipeline {a.pipeline}{' --name ' + deployment if a.name else ''} --deprovision")
    return 0


def register(sub: Any) -> None:
    d = sub.add_parser("dashboard", help=f"start the local ZenML server and dashboard on {HOST} (--stop stops it)")
    d.add_argument("--port", type=int, default=DASHBOARD_PORT)
    d.add_argument("--restart", action="store_true", help="restart the server if it is running")
    d.add_argument("--stop", action="store_true", help="stop the local server and go back to the local store")
    d.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser(
        "deploy-pipeline",
        help="deploy a pipeline with ZenML's local deployer: an HTTP service on 127.0.0.1 whose POST /invoke starts a run",
    )
    p.add_argument("pipeline", choices=DEPLOYABLE)
    p.add_argument("--name", help="deployment name (default: the pipeline's name)")
    p.add_argument("--config", default="configs/demo.yaml", help="YAML run config (the pipeline's section, as for `iat run`)")
    p.add_argument("--port", type=int, default=DEPLOY_PORT, help="preferred port (a free one is taken when busy)")
    p.add_argument("--timeout", type=int, help="seconds to wait for the service to come up")
    p.add_argument("--deprovision", action="store_true", help="stop and delete the deployment")
    p.add_argument("--keep", action="store_true", help="with --deprovision: stop the service but keep the deployment record")
    p.add_argument("--dataset", choices=["synthetic", "movielens-100k", "file"])
    p.add_argument("--path", help="with --dataset file: the log (its schema names the data set in the model names)")
    p.add_argument("--users", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--kind", choices=list(E2E_SOURCE_KINDS), help="end_to_end: source model kind")
    p.add_argument("--L", type=int, help="end_to_end: instance-token history length")
    p.add_argument("--seeds", type=int, nargs="+", help="end_to_end: downstream training seeds")
    p.add_argument("--epochs", type=int, help="end_to_end: training epochs of every model")
    p.set_defaults(func=_cmd_deploy)

    u = sub.add_parser("undeploy", help="stop and delete a pipeline deployment (= deploy-pipeline NAME --deprovision)")
    u.add_argument("name", help="deployment name")
    u.set_defaults(func=lambda a: _cmd_deploy(argparse.Namespace(pipeline=a.name, name=a.name, deprovision=True, keep=False)))
