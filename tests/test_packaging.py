"""Packaging: the ZenML package pipeline builds a Bento tagged with the ranker's model version, `iat serve`
serves the latest Bento on 127.0.0.1 with a store outside it, and the Kubernetes manifests probe real endpoints."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import bentoml
import pytest
import yaml
from zenml import Model, link_artifact_to_model, save_artifact
from zenml.client import Client

from iat.tokens import TokenStore
from iatcli.serve_cmds import latest_ranker, serve_command
from pipelines.package import package_pipeline
from serving.bento import PACKAGE_ALIAS, PACKAGE_MODEL, bento_name, bento_version, build_bento, latest_bento
from steps.materializers import RankerBundleMaterializer, SourceBundleMaterializer
from tests._serving import REPO, Service, built, free_port, instance_of, query_of

K8S = REPO / "deploy" / "k8s"


@pytest.fixture(scope="module")
def b():
    return built()


def _register(b) -> tuple[str, str]:
    """The fixture's ranker, source bundle and token store as artifacts of two model versions, as the
    downstream and tokens pipelines would leave them."""
    client, versions = Client(), []
    for name, arts in (
        ("iat-ranker-synthetic-servetest", [("ranker", b.ranker, RankerBundleMaterializer)]),
        ("iat-source-synthetic-servetest", [("source_bundle", b.source, SourceBundleMaterializer), ("token_store", {"path": str(b.store), "source": TokenStore.open(b.store).source}, None)]),
    ):
        client.create_model(name)
        version = client.create_model_version(name).name  # numbered as pipeline runs number them
        for art_name, data, materializer in arts:
            link_artifact_to_model(save_artifact(data, art_name, materializer=materializer), model=Model(name=name, version=version))
        versions.append(version)
    return versions[0], versions[1]


def test_package_pipeline_builds_a_bento_for_the_model_version(b, iat_home):
    ranker_version, source_version = _register(b)
    with pytest.raises(ValueError, match="no version of iat-source-synthetic-temporal holds"):  # found from the ranker's tokens
        package_pipeline("iat-ranker-synthetic-servetest", ranker_version, packages_dir=str(iat_home / "serving"))
    with pytest.raises(ValueError, match="no ranker model iat-ranker-movielens-100k-servetest"):  # another data set's
        package_pipeline("iat-ranker-movielens-100k-servetest", packages_dir=str(iat_home / "serving"))
    assert latest_ranker("synthetic") == "iat-ranker-synthetic-servetest"  # `iat package --dataset synthetic`
    with pytest.raises(FileNotFoundError, match="no ranker model \\(iat-ranker-no-such-data-set-\\*\\)"):
        latest_ranker("no-such-data-set")  # (other tests of the session may have trained MovieLens rankers)
    run = package_pipeline("iat-ranker-synthetic-servetest", ranker_version, source="servetest", packages_dir=str(iat_home / "serving"))
    run = Client().get_pipeline_run(run.id)
    assert run.status.value == "completed"
    handle = run.steps["build_serving_package"].outputs["serving_package"][0].load()
    assert handle["zenml_model"] == "iat-ranker-synthetic-servetest" and handle["zenml_model_version"] == ranker_version
    bento = run.steps["build_bento_step"].outputs["bento"][0].load()
    assert str(bento.tag) == f"iat-ranker-synthetic-servetest:mv{ranker_version}-{b.ranker.config['version']}"
    assert bento.info.labels["zenml_model_version"] == ranker_version
    assert bento.info.labels["ranker_version"] == b.ranker.config["version"]
    src = Path(bento.path) / "src"
    for f in ("serving/service.py", "iat/serving_core.py"):
        assert (src / f).is_file(), f
    # the package is a BentoML model that the Bento lists under the alias the service loads
    (spec,) = bento.info.all_models
    assert spec.alias == PACKAGE_ALIAS and spec.tag.name == PACKAGE_MODEL
    model = bentoml.models.get(spec.tag)
    assert model.info.labels["zenml_model_version"] == ranker_version and model.info.labels["ranker_version"] == b.ranker.config["version"]
    for f in ("package.json", "ranker/model.pt", "store/manifest.json"):
        assert (Path(model.path) / f).is_file(), f
    assert not (src / "package").exists()
    # both artifacts hang off the ranker's model version
    mv = Client().get_model_version("iat-ranker-synthetic-servetest", ranker_version)
    assert {"serving_package", "bento"} <= set(mv.data_artifacts) | set(mv.model_artifacts) | set(mv.deployment_artifacts)


def test_iat_serve_serves_the_latest_bento_with_a_store_outside_it(b, tmp_path, monkeypatch):
    bento = build_bento(b.package, bento_name("serve test"), bento_version("7", b.ranker.config["version"]), {"purpose": "test"})
    assert latest_bento().tag == bento.tag and bento.tag.name == "iat-ranker-serve-test"
    monkeypatch.chdir(tmp_path)
    cmd, env = serve_command(argparse.Namespace(bento=None, package=None, store=None, port=free_port()))
    assert cmd[4] == str(bento.tag) and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert Path(env["IAT_TOKEN_STORE"]).is_relative_to(tmp_path)
    svc = Service(env, cmd=cmd, port=int(cmd[cmd.index("--port") + 1]))
    try:
        svc.wait_ready()
        probes = yaml.safe_load((K8S / "deployment.yaml").read_text().split("\n---")[0])["spec"]["template"]["spec"]["containers"][0]
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            assert svc.client.get(probes[probe]["httpGet"]["path"]).status_code == 200, probe
        row = b.df.iloc[-1]
        assert svc.client.post("/rank", json=query_of(row, b.schema)).status_code == 200
        r = svc.client.post("/ingest", json=instance_of(row, b.schema, instance_id=10**10, ts=int(row["ts"]) + 1))
        assert r.status_code == 200, r.text
    finally:
        svc.stop()
    bento_store = TokenStore.open(Path(bentoml.models.get(bento.info.all_models[0].tag).path) / "store")
    live = TokenStore.open(env["IAT_TOKEN_STORE"])
    assert live.rows == bento_store.rows + 1  # the ingest went to the live store; the Bento is untouched


def test_iat_serve_refuses_a_folder_that_is_not_a_package(tmp_path):
    """Before any server starts: BentoML keeps its server up while the worker dies at start-up."""
    with pytest.raises(FileNotFoundError, match=f"{tmp_path} is not a serving package"):
        serve_command(argparse.Namespace(bento=None, package=str(tmp_path), store=None, port=free_port()))


def test_cli_commands_parse():
    from iatcli.serve_cmds import register

    p = argparse.ArgumentParser()
    register(p.add_subparsers(dest="command", required=True))
    a = p.parse_args(["serve", "--package", "pkg", "--port", "3100"])
    assert (a.package, a.port, a.bento, a.func.__name__) == ("pkg", 3100, None, "_cmd_serve")
    a = p.parse_args(["package"])
    assert (a.ranker, a.source, a.func.__name__) == (None, None, "_cmd_package")
    with pytest.raises(SystemExit):
        p.parse_args(["serve", "--package", "pkg", "--bento", "x:y"])


def test_k8s_manifests_are_complete():
    docs = [d for f in sorted(K8S.glob("*.yaml")) for d in yaml.safe_load_all(f.read_text())]
    kinds = {d["kind"]: d for d in docs}
    assert {"Deployment", "Service", "PersistentVolumeClaim"} <= set(kinds)
    dep, svc = kinds["Deployment"], kinds["Service"]
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert c["resources"]["requests"]["cpu"] and c["resources"]["limits"]["memory"]
    port = {p["name"]: p["containerPort"] for p in c["ports"]}["http"]
    env = {e["name"]: e["value"] for e in c["env"]}
    assert env["BENTOML_PORT"] == str(port) and env["IAT_TOKEN_STORE"].startswith(c["volumeMounts"][0]["mountPath"])
    assert svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"] and svc["spec"]["ports"][0]["targetPort"] == "http"
    bentofile = yaml.safe_load((REPO / "deploy" / "bentofile.yaml").read_text())
    assert bentofile["service"] == "serving.service:IATRanker" and bentofile["python"]["lock_packages"] is False


def test_plain_bentoml_build_of_the_shipped_bentofile(b, tmp_path):
    """`bentoml build -f deploy/bentofile.yaml .` from the repository root: a clear error while no package was
    saved, then a Bento that carries the latest saved package."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "bentoml", "build", "-f", "deploy/bentofile.yaml", ".", "--output", "tag"]
    empty = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "BENTOML_HOME": str(tmp_path / "empty_home")})
    assert empty.returncode != 0 and "iat-serving-package" in empty.stdout + empty.stderr
    bento = build_bento(b.package, bento_name("plain build"), bento_version("1", b.ranker.config["version"]))
    model_tag = bento.info.all_models[0].tag
    done = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    plain = bentoml.get(done.stdout.strip().splitlines()[-1].removeprefix("__tag__:"))
    assert [(m.tag, m.alias) for m in plain.info.all_models] == [(model_tag, PACKAGE_ALIAS)]


def test_k8s_online_store_manifests() -> None:
    """Several ranker replicas on one Redis: the URL names the Redis Service, which selects the Redis pods, whose
    append-only file is fsynced on every write; the ranker pods carry no token-store volume."""
    docs = {d["kind"]: d for f in sorted((K8S / "online").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d["metadata"]["name"].startswith("iat-r")}
    redis_svc = next(d for f in sorted((K8S / "online").glob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d["kind"] == "Service")
    dep, sts = docs["Deployment"], docs["StatefulSet"]
    assert dep["spec"]["replicas"] >= 2 and "volumes" not in dep["spec"]["template"]["spec"]
    env = {e["name"]: e["value"] for e in dep["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["IAT_ONLINE_STORE"] == f"redis://{redis_svc['metadata']['name']}:{redis_svc['spec']['ports'][0]['port']}/0"
    assert redis_svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    args = sts["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendfsync") + 1] == "always" and args[args.index("--appendonly") + 1] == "yes"
