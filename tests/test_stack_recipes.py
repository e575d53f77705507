"""The stack recipes (configs/stacks, deploy/stacks), checked as far as a machine without a cluster or Docker
allows: ZenML's own models parse the run configs, the integrations' settings classes accept them with no
unknown key, and ZenML compiles ``end_to_end`` with the Kubernetes one into what its orchestrator would run."""

from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator
from uuid import uuid4

import pytest
import yaml
from kubernetes.utils import parse_quantity
from zenml.client import Client
from zenml.config import DockerSettings, ResourceSettings
from zenml.config.pipeline_run_configuration import PipelineRunConfiguration
from zenml.integrations.kubeflow.flavors.kubeflow_orchestrator_flavor import KubeflowOrchestratorSettings
from zenml.integrations.kubernetes import serialization_utils
from zenml.integrations.kubernetes.flavors import KubernetesOrchestratorFlavor, KubernetesOrchestratorSettings
from zenml.stack import Stack

from iatcli.end_to_end import e2e_plan
from pipelines.end_to_end import IAT_STEP, end_to_end_pipeline

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"kubernetes": REPO / "configs/stacks/k8s.yaml", "kubeflow": REPO / "configs/stacks/kubeflow.yaml"}
ORCHESTRATOR_SETTINGS = {"kubernetes": KubernetesOrchestratorSettings, "kubeflow": KubeflowOrchestratorSettings}
# KubernetesPodSettings fields that hold Kubernetes API objects (camelCase keys), and their classes.
POD_MODELS = {"volumes": "V1Volume", "volume_mounts": "V1VolumeMount", "resources": "V1ResourceRequirements", "env": "V1EnvVar", "tolerations": "V1Toleration", "affinity": "V1Affinity"}
TRAIN_STEPS = ("train_source", "train_ranker_base", "train_ranker_iat", "transfer_evaluation")


def _run_config(flavor: str) -> PipelineRunConfiguration:
    return PipelineRunConfiguration.model_validate(yaml.safe_load(CONFIGS[flavor].read_text()))


def _settings(rc: PipelineRunConfiguration) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(where, key, values) of every settings entry: the pipeline's, then each step's."""
    for key, value in (rc.settings or {}).items():
        yield "pipeline", key, dict(value)
    for step, conf in (rc.steps or {}).items():
        for key, value in (conf.settings or {}).items():
            yield step, key, dict(value)


def _check_pod_objects(pod: dict[str, Any]) -> None:
    """Each Kubernetes object in pod settings must be one the Kubernetes client can build; ZenML itself only
    logs a warning for unknown (e.g. snake_case) keys."""
    for field, cls in POD_MODELS.items():
        value = pod.get(field)
        for item in value if isinstance(value, list) else [value] if value else []:
            serialization_utils.deserialize_kubernetes_model(item, cls)


@pytest.mark.parametrize("flavor", CONFIGS)
def test_run_config_is_accepted_by_zenml_settings(flavor):
    rc = _run_config(flavor)
    assert rc.environment == {"IAT_HOME": "/mnt/iat"}
    classes = {"docker": DockerSettings, "resources": ResourceSettings, f"orchestrator.{flavor}": ORCHESTRATOR_SETTINGS[flavor]}
    seen = set()
    for where, key, values in _settings(rc):
        # ZenML drops settings under a key naming no component of the stack (e.g. a bare `orchestrator`).
        assert key in classes, (where, key)
        settings = classes[key].model_validate(values)
        # BaseSettings accept unknown attributes (ZenML drops them at compile time): a typo would pass unnoticed.
        assert not settings.model_extra, (where, key, settings.model_extra)
        if key.startswith("orchestrator."):
            # The Kubeflow settings replace given pod settings with ones built from legacy keys: keep none there.
            assert flavor == "kubernetes" or "pod_settings" not in values, where
            _check_pod_objects(values.get("pod_settings") or {})
        if key == "resources":
            # Kubeflow: ZenML passes memory to KFP as a float, which KFP rejects. Kubernetes: step resources
            # are ignored by the orchestrator (it warns); they go in pod settings.
            assert flavor == "kubeflow" and settings.memory is None and settings.cpu_count, where
        if key == "docker":
            assert (REPO / settings.build_config.dockerignore).is_file()
        seen.add((where, key))
    assert {s for s, k in seen if k in ("resources", "orchestrator.kubernetes") and s != "pipeline"} >= set(TRAIN_STEPS)


@pytest.fixture(scope="module")
def plan() -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``iat run end_to_end`` runs for configs/demo.yaml: (run parameters, binding)."""
    return e2e_plan(str(REPO / "configs/demo.yaml"))


@pytest.mark.parametrize("flavor", CONFIGS)
def test_run_config_names_steps_of_end_to_end(flavor, plan):
    params, binding = plan
    pipeline = end_to_end_pipeline(**binding)
    pipeline.prepare(**params)
    # ZenML ignores `steps:` entries that match no invocation id, with only a warning.
    assert set(_run_config(flavor).steps) <= set(pipeline.invocations)


def test_kubernetes_orchestrator_gets_volume_and_step_resources(plan, monkeypatch):
    """Compile end_to_end with configs/stacks/k8s.yaml for a stack with the Kubernetes orchestrator (built
    here, no cluster behind it) and read each step's settings the way that orchestrator does."""
    flavor = KubernetesOrchestratorFlavor()
    now = datetime.now(timezone.utc)
    orchestrator = flavor.implementation_class(
        id=uuid4(), name="iat_kubernetes", flavor=flavor.name, type=flavor.type, config=flavor.config_class(kubernetes_context="none"),
        environment={}, user=None, created=now, updated=now, secrets=[],
    )
    stack = Stack(id=uuid4(), name="iat_kubernetes", orchestrator=orchestrator, artifact_store=Client().active_stack.artifact_store)
    monkeypatch.setattr(Client, "active_stack", property(lambda self: stack))
    params, binding = plan
    pipeline = end_to_end_pipeline(**binding).with_options(config_path=str(CONFIGS["kubernetes"]))
    pipeline.prepare(**params)
    snapshot, _, _ = pipeline._compile(config_path=str(CONFIGS["kubernetes"]), steps=pipeline._run_args["step_configurations"])

    steps = snapshot.step_configurations
    assert set(steps) == set(pipeline.invocations)
    memory = {}
    for name, step in steps.items():
        pod = orchestrator.get_settings(step).pod_settings
        home = step.config.environment["IAT_HOME"]
        assert [v["persistentVolumeClaim"]["claimName"] for v in pod.volumes] == ["iat-shared"], name
        assert [m["mountPath"] for m in pod.volume_mounts] == [home] == ["/mnt/iat"], name
        assert not orchestrator.requires_resources_in_orchestration_environment(step), name
        memory[name] = parse_quantity(pod.resources["requests"]["memory"])
        assert parse_quantity(pod.resources["limits"]["memory"]) >= memory[name] > 0 and pod.resources["requests"]["cpu"], name
    assert min(memory[s] for s in TRAIN_STEPS) > max(m for s, m in memory.items() if s not in TRAIN_STEPS)
    # The binding's step parameters (the ranker specs...) survive next to the file's settings.
    assert steps[IAT_STEP].config.parameters["spec"] == binding["iat_spec"]

    manifest = yaml.safe_load((REPO / "deploy/stacks/k8s-shared-volume.yaml").read_text())
    serialization_utils.deserialize_kubernetes_model(manifest, "V1PersistentVolumeClaim")
    assert manifest["metadata"]["name"] == "iat-shared" and manifest["spec"]["accessModes"] == ["ReadWriteMany"]


def test_kubeflow_cluster_manifests():
    docs = {d["kind"]: d for d in yaml.safe_load_all((REPO / "deploy/stacks/kubeflow-shared-volume.yaml").read_text())}
    assert set(docs) == {"PersistentVolumeClaim", "PodDefault", "LimitRange"}
    for kind in ("PersistentVolumeClaim", "LimitRange"):
        serialization_utils.deserialize_kubernetes_model(docs[kind], f"V1{kind}")
    pod_default = docs["PodDefault"]["spec"]  # a Kubeflow CRD: its fields are the Pod's
    for v in pod_default["volumes"]:
        serialization_utils.deserialize_kubernetes_model(v, "V1Volume")
    mounts = [serialization_utils.deserialize_kubernetes_model(m, "V1VolumeMount") for m in pod_default["volumeMounts"]]
    assert [m.mount_path for m in mounts] == [_run_config("kubeflow").environment["IAT_HOME"]]
    assert pod_default["volumes"][0]["persistentVolumeClaim"]["claimName"] == docs["PersistentVolumeClaim"]["metadata"]["name"]
