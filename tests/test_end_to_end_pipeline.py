"""The end_to_end ZenML pipeline on a tiny synthetic log (temporary store from conftest.py): artifacts and model
versions through the client, lineage ranker -> token store -> source model, step caching on a re-run, and the
pipeline deployed with the local deployer: an HTTP invoke with new parameters records a new run."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request

import pytest
from zenml.client import Client

from iat.report import format_result_table
from pipelines.end_to_end import end_to_end_pipeline

TINY_SOURCE = {"d_e": 4, "d_group": 8, "cross_layers": 1, "cross_rank": 8, "hidden": [32, 32], "D": 16, "decompress": [16]}
FAST = {"epochs": 1, "batch_size": 512, "threads": 1, "progress": False}
NAME = "e2e-test"


def _binding() -> dict:
    return {
        "kind": "temporal",
        "dataset": "synthetic",
        "base_spec": {"name": f"{NAME}-base", "model": "ranker", "config": {"seq": "din"}, "tokens": None, "L": 8, "base_L": 8},
        "iat_spec": {"name": f"{NAME}-iat", "model": "ranker", "config": {"seq": "din", "iat": "transformer"}, "tokens": "temporal", "L": 8, "base_L": 8},
        "source_model_config": TINY_SOURCE,
        "source_train_config": FAST,
        "ranker_train_config": FAST,
        # no early-period source, task or control rows: the smallest transfer table
        "transfer_config": {"source_domain": "ads", "target_domains": ["mall"], "source_model": TINY_SOURCE, "source_train": FAST,
                            "train": FAST, "L": 8, "base_L": 8, "seeds": [0], "period": None, "task": False, "controls": False},
    }


def _params(iat_home, **kw) -> dict:
    return {"users": 60, "seed": 5, "kind": "temporal", "L": 8, "n_boot": 10, "reports_dir": str(iat_home / "reports" / "validation"), **kw}


def test_end_to_end_runs_registers_models_with_lineage_and_caches(iat_home):
    client = Client()
    run = client.get_pipeline_run(end_to_end_pipeline(**_binding())(**_params(iat_home)).id)
    assert run.status.value == "completed"
    assert set(run.steps) == {"ingest", "validate", "split", "train_source", "materialize_tokens", "train_ranker_base", "train_ranker_iat", "transfer_evaluation", "result_table"}

    # the result table: both models, metrics in range, the oracle from the synthetic world
    table = run.steps["result_table"].outputs["result_table"][0].load()
    assert [r["model"] for r in table["rows"]] == [f"{NAME}-base", f"{NAME}-iat"]
    for r in table["rows"]:
        assert 0.3 < r["auc"] < 1 and r["auc_lo"] <= r["auc"] <= r["auc_hi"] and r["logloss"] > 0
    assert 0.5 < table["oracle_auc"] < 1 and "+IAT" in table["delta_vs_base"]
    assert "oracle AUC" in format_result_table(table)
    # one unit for the relative numbers of the invoke answer: percent (delta and share of the oracle gap alike)
    assert table["units"] == {"rows": "metric values", "delta_vs_base": "percent", "gap_closed": "percent"}
    gap = table["oracle_auc"] - table["rows"][0]["auc"]
    assert table["gap_closed"]["+IAT"] == pytest.approx(100 * (table["rows"][1]["auc"] - table["rows"][0]["auc"]) / gap)
    # the transfer table renders as markdown in the ZenML run view (a typed visualization, not a str artifact)
    assert type(run.steps["transfer_evaluation"].outputs["transfer_table"][0].load()).__name__ == "MarkdownString"
    # the transfer step's table travels in the result: mall rankers without tokens, over ads (cross-domain) and
    # mall (in-domain) tokens, and the GBDT without and with ads tokens; ads rankers without and with ads tokens
    transfer = run.steps["transfer_evaluation"].outputs["transfer_results"][0].load()
    assert list(transfer["model"]) == [
        "mall: base (no tokens)", "mall: +ads tokens (cross-domain)", "mall: +mall tokens (in-domain)",
        "mall: GBDT (no tokens)", "mall: GBDT + ads tokens (cross-domain)",
        "ads: base (no tokens)", "ads: +ads tokens (source trained on the whole train period)", "ads: GBDT (no tokens)",
    ]  # fmt: skip
    assert table["transfer"] == run.steps["transfer_evaluation"].outputs["transfer_table"][0].load()
    assert "+ads tokens (cross-domain)" in format_result_table(table)

    # model versions: the source model holds the data, bundle and token store; each ranker its bundle + metrics
    smv = run.model_version
    assert smv.model.name == "iat-source-synthetic-temporal"
    store_art = smv.get_artifact("token_store")
    assert store_art is not None and smv.get_artifact("source_bundle") is not None and smv.get_artifact("split_instances") is not None
    rmv = client.get_model_version(f"iat-ranker-synthetic-{NAME}-iat")
    ranker = rmv.get_artifact("ranker").load()
    assert abs(rmv.run_metadata["test"]["auc"] - ranker.metrics["test"]["auc"]) < 1e-12
    assert abs(table["rows"][1]["auc"] - ranker.metrics["test"]["auc"]) < 1e-12
    # lineage: the +IAT ranker read the token store linked to the source model version, made by that version
    iat_step = run.steps["train_ranker_iat"]
    assert iat_step.model_version.id == rmv.id
    assert iat_step.inputs["token_store"][0].id == store_art.id
    assert ranker.config["token_source"]["run_id"] == f"iat-source-synthetic-temporal:{smv.name}"
    assert rmv.run_metadata["token_store"]["path"] == store_art.load()["path"]
    assert iat_step.inputs["split_instances"][0].id == smv.get_artifact("split_instances").id
    base = client.get_model_version(f"iat-ranker-synthetic-{NAME}-base").get_artifact("ranker").load()
    assert base.config["token_source"] is None

    # the same parameters again: every stage comes from the cache
    again = client.get_pipeline_run(end_to_end_pipeline(**_binding())(**_params(iat_home)).id)
    assert again.status.value == "completed"
    assert {n: s.status.value for n, s in again.steps.items() if s.status.value != "cached"} == {}
    assert again.steps["result_table"].outputs["result_table"][0].load() == table


def test_a_run_of_another_data_set_than_the_bound_model_names_is_refused(iat_home):
    """The model names are bound at compile time (and in a deployment); a run whose log is another data set than
    the one they name fails in train_source, naming both, before any model version gets a source bundle."""
    with pytest.raises(Exception, match="this run's source model is iat-source-synthetic-temporal .* registers its models under 'iat-source-movielens-100k-temporal'"):
        end_to_end_pipeline(**{**_binding(), "dataset": "movielens-100k"})(**_params(iat_home))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict, timeout: float) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_deployed_end_to_end_answers_invoke_with_parameters_and_records_a_run(iat_home):
    from iatcli.zenml_cmds import deprovision, ensure_deployer_stack

    client = Client()
    ensure_deployer_stack()
    port = _free_port()
    pipe = end_to_end_pipeline(**_binding(), settings={"deployer.local": {"port": port, "address": "127.0.0.1"}})
    deployment = pipe.deploy(deployment_name="e2e-test-deploy", **_params(iat_home))
    try:
        assert deployment.url and deployment.url.startswith("http://127.0.0.1:")
        before = {r.id for r in client.list_pipeline_runs(pipeline_name="end_to_end", size=100)}
        answer = _post(f"{deployment.url}/invoke", {"parameters": _params(iat_home, L=4, seeds=[1])}, timeout=600)
        assert answer["success"], answer.get("error")
        assert answer["metadata"]["parameters_used"]["L"] == 4
        rows = answer["outputs"]["result_table"]["rows"]
        assert [r["seeds"] for r in rows] == [[1], [1]]
        run = client.get_pipeline_run(answer["metadata"]["run_id"])
        assert run.id not in before and run.status.value == "completed"
        assert run.snapshot.pipeline_spec.parameters["L"] == 4
        assert run.steps["train_ranker_iat"].config.parameters["L"] == 4
        assert run.steps["train_ranker_iat"].outputs["ranker"][0].load().spec.L == 4
    finally:
        deprovision("e2e-test-deploy")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{deployment.url}/health", timeout=5)


def test_deployed_data_pipeline_runs_on_http_invoke_then_is_deprovisioned(iat_home):
    """The cheap pipeline through the same deployment path (local deployer, POST /invoke, deprovision)."""
    from iatcli.zenml_cmds import deploy, deprovision

    client = Client()
    port = _free_port()
    reports = str(iat_home / "reports" / "validation")
    deployment = deploy("data", "data-test-deploy", None, {"users": 40, "seed": 2, "reports_dir": reports}, port=port)
    try:
        assert str(getattr(deployment.status, "value", deployment.status)) == "running"
        assert deployment.url.startswith("http://127.0.0.1:")
        answer = _post(f"{deployment.url}/invoke", {"parameters": {"users": 30, "seed": 3, "reports_dir": reports}}, timeout=300)
        assert answer["success"], answer.get("error")
        run = client.get_pipeline_run(answer["metadata"]["run_id"])
        assert run.status.value == "completed" and run.pipeline.name == "data_pipeline"
        assert run.steps["ingest"].config.parameters["users"] == 30 and run.steps["ingest"].config.parameters["seed"] == 3
        raw = run.steps["ingest"].outputs["raw_instances"][0].load()
        assert raw["user_id"].nunique() == 30
        # an unauthenticated caller cannot point the pipeline at files outside the data root
        try:
            bad = _post(f"{deployment.url}/invoke", {"parameters": {"dataset": "file", "path": "/etc/passwd"}}, timeout=300)
        except urllib.error.HTTPError as e:
            bad = {"success": False, "error": e.read().decode()}
        assert not bad["success"] and "outside the data root" in str(bad.get("error")), bad
    finally:
        deprovision("data-test-deploy")
    with pytest.raises(KeyError):
        client.get_deployment("data-test-deploy")
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):
        urllib.request.urlopen(f"{deployment.url}/health", timeout=5)


def test_run_end_to_end_refuses_flags_it_does_not_take():
    from iatcli.main import build_parser

    a = build_parser().parse_args(["run", "end_to_end", "--processes", "2", "--users", "50"])
    with pytest.raises(ValueError, match="does not take --processes"):
        a.func(a)
