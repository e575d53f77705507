"""``iat package`` (ZenML package pipeline -> serving package + Bento) and ``iat serve`` (the ranking service on
127.0.0.1). ``register(subparsers)`` adds them to the ``iat`` parser."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

SERVING_STORES_DIR = "data/serving_stores"


def latest_ranker(dataset: str | None = None) -> str:
    """The ranker model (``iat-ranker-<data set>-<spec>``; of ``dataset`` when given) whose latest version is the newest."""
    from zenml.client import Client
    from zenml.enums import ModelStages

    from iat.model_names import RANKER_PREFIX, ranker_model_name

    prefix = ranker_model_name(dataset, "") if dataset else RANKER_PREFIX
    client = Client()
    models = client.list_models(name=f"startswith:{prefix}", size=1000)
    latest = []
    for m in models:
        try:
            latest.append(client.get_model_version(m.name, ModelStages.LATEST))
        except KeyError:  # a model without versions
            continue
    if not latest:
        raise FileNotFoundError(f"no ranker model ({prefix}*) yet: train one with the downstream pipeline first")
    return max(latest, key=lambda v: v.created).model.name


def _cmd_package(a: argparse.Namespace) -> int:
    from zenml.client import Client

    from iat.data.registry import dataset_name
    from iat.model_names import ranker_model_name
    from pipelines.package import package_pipeline

    ds = dataset_name(a.dataset, a.path) if a.dataset else None
    ranker = ranker_model_name(ds or dataset_name("synthetic"), a.ranker) if a.ranker else latest_ranker(ds)
    print(f"packaging ZenML model {ranker}{' version ' + a.ranker_version if a.ranker_version else ' (latest version)'}")
    run = Client().get_pipeline_run(
        package_pipeline(ranker, a.ranker_version, a.source, a.source_version, packages_dir=a.packages_dir).id
    )
    print(f"pipeline 'package' run {run.name}: {run.status.value}")
    if run.status.value != "completed":
        return 1
    handle = run.steps["build_serving_package"].outputs["serving_package"][0].load()
    bento = run.steps["build_bento_step"].outputs["bento"][0].load()
    print(f"serving package: {handle['path']}\nbento: {bento.tag} (ZenML model {handle['zenml_model']} version {handle['zenml_model_version']})")
    print(f"serve it: iat serve --bento {bento.tag}")
    return 0


def serve_command(a: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """The ``bentoml serve`` command line and environment for ``iat serve``'s arguments."""
    from serving.bento import SOURCE_ROOT, latest_bento

    env = dict(os.environ)
    base = [sys.executable, "-m", "bentoml", "serve"]
    bind = ["--host", "127.0.0.1", "--port", str(a.port)]
    if a.package:
        from iat.serving_package import read_package

        read_package(a.package)  # a clear error now, not a worker that dies at start-up behind a live server
        env["IAT_SERVING_PACKAGE"] = str(Path(a.package).resolve())
        if a.store:
            env["IAT_TOKEN_STORE"] = str(Path(a.store).resolve())
        return [*base, "serving.service:IATRanker", "--working-dir", str(SOURCE_ROOT), *bind], env
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        bento = bentoml.get(a.bento) if a.bento else latest_bento()
    except NotFound as e:
        raise FileNotFoundError(f"no Bento {a.bento} in the local store ({os.environ.get('BENTOML_HOME')}): {e}") from e
    # a Bento's files are immutable: ingest writes to a store outside it, seeded from its snapshot on first start
    store = Path(a.store) if a.store else Path(SERVING_STORES_DIR) / f"{bento.tag.name}-{bento.tag.version}"
    env["IAT_TOKEN_STORE"] = str(store.resolve())
    return [*base, str(bento.tag), *bind], env


def _cmd_serve(a: argparse.Namespace) -> int:
    cmd, env = serve_command(a)
    print(f"serving {cmd[4]} on http://127.0.0.1:{a.port} (token store: {env.get('IAT_TOKEN_STORE', 'the package store, in place')}); Ctrl+C stops it", flush=True)
    try:
        return subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return 0


def register(subparsers: Any) -> None:
    """Add ``package`` and ``serve`` to the ``iat`` command."""
    p = subparsers.add_parser("package", help="build a serving package and a Bento from a ranker model version (ZenML pipeline)")
    p.add_argument("--ranker", help="ranker spec name: packages ZenML model iat-ranker-<data set>-<name> (default: the most recently trained ranker of any data set)")
    p.add_argument("--dataset", choices=["synthetic", "movielens-100k", "file"], help="the ranker's data set (with --ranker: default synthetic; without: the newest ranker of that data set)")
    p.add_argument("--path", help="with --dataset file: the log, whose schema names the data set")
    p.add_argument("--ranker-version", help="ZenML model version (default: latest)")
    p.add_argument("--source", help="source model kind (iat-source-<the ranker's data set>-<kind>) of the bundle and token store (default: the one that made the ranker's tokens)")
    p.add_argument("--source-version", help="ZenML model version of that source model (default: the one holding the ranker's source bundle)")
    p.add_argument("--packages-dir", default="data/serving", help="where serving packages are written")
    p.set_defaults(func=_cmd_package)

    s = subparsers.add_parser("serve", help="serve the ranking service on 127.0.0.1 (the latest Bento by default)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--bento", help="Bento tag, e.g. iat-ranker-iat:mv1-0123abcd (default: the latest iat-ranker* Bento)")
    g.add_argument("--package", help="a serving package folder instead of a Bento")
    s.add_argument("--store", help="live token store that ingest writes to (seeded from the package on first start)")
    s.add_argument("--port", type=int, default=3000)
    s.set_defaults(func=_cmd_serve)
