"""source -> tokens -> downstream as ZenML pipelines on the local store, with lineage through model versions."""

from zenml.client import Client

from iat.tokens import TokenStore
from iat.tokens.online import RedisTokenStore
from iat.tokens.redis_server import RedisServer
from pipelines.downstream import downstream_pipeline
from pipelines.source import source_pipeline
from pipelines.tokens import tokens_pipeline

FAST = {"epochs": 1, "threads": 1, "progress": False, "batch_size": 512}


def test_tokens_and_downstream_pipelines_with_lineage():
    src = Client().get_pipeline_run(source_pipeline(kind="temporal", users=100, seed=3, train_config=FAST, n_boot=0).id)
    assert src.status.value == "completed"
    bundle = src.steps["train_source"].outputs["source_bundle"][0].load()

    with RedisServer() as redis:  # and published as the live online store, each user's last 16 tokens
        run = Client().get_pipeline_run(tokens_pipeline(source="temporal", online_store=redis.url, retention=16).id)
        online = RedisTokenStore.open(redis.client())
        assert run.status.value == "completed"
        published = run.steps["publish_online"].outputs["online_store"][0].load()
        assert published["version"] == online.version and online.meta.retention == 16 and published["rows"] == online.rows
        handle = run.steps["materialize_tokens"].outputs["token_store"][0].load()
        assert online.source == TokenStore.open(handle["path"]).source and 0 < online.rows < TokenStore.open(handle["path"]).rows
    store = TokenStore.open(handle["path"], verify="full", expected_source={"version": bundle.config["version"]})
    mv = Client().get_model_version("iat-source-synthetic-temporal")
    assert store.source["run_id"] == f"iat-source-synthetic-temporal:{mv.name}"
    data = src.steps["split"].outputs["split_instances"][0].load()
    assert store.rows == len(data)
    # The store artifact hangs off the source model's version: the dashboard shows which model made it.
    assert mv.get_artifact("token_store").load()["path"] == handle["path"]

    spec = {"name": "t-iat-test", "config": {"seq": "din", "iat": "transformer"}, "tokens": "temporal", "L": 8}
    run = Client().get_pipeline_run(downstream_pipeline(spec, source="temporal", train_config=FAST, n_boot=0).id)
    assert run.status.value == "completed"
    ranker = run.steps["train_ranker"].outputs["ranker"][0].load()
    assert ranker.config["token_source"] == store.source
    assert 0.5 < ranker.metrics["test"]["auc"] < 1.0
    rv = Client().get_model_version("iat-ranker-synthetic-t-iat-test")
    assert abs(rv.run_metadata["test"]["auc"] - ranker.metrics["test"]["auc"]) < 1e-9
    # the model card: rendered in the run view (a MarkdownString), naming the model version, its store and metrics
    card = run.steps["train_ranker"].outputs["model_card"][0]
    text = card.load()
    assert card.visualizations and f"iat-ranker-synthetic-t-iat-test v{rv.number}" in text and handle["path"] in text
    assert f"{ranker.metrics['test']['auc']:.4f}" in text and f"{ranker.metrics['valid']['auc']:.4f}" in text
