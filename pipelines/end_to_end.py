"""``end_to_end``: the whole product as one ZenML pipeline.

ingest -> validate -> split -> train_source -> materialize_tokens -> train_ranker_base / train_ranker_iat
-> transfer_evaluation -> result_table

Each stage is its own cached step with typed artifacts, so a re-run with unchanged parameters skips every
finished stage. Models are ZenML model versions: the run's model is ``iat-source-<data set>-<kind>`` (the data
artifacts, the source bundle and the token store are linked to it, as the source and tokens pipelines do), each
ranker step has its own ``iat-ranker-<data set>-<spec name>`` with its metrics as metadata. Lineage: ranker <- token_store <- source_bundle
<- split_instances <- clean_instances <- raw_instances, visible in the dashboard's run DAG.

Parameters of ``end_to_end`` (the signature) are the ones a deployed pipeline takes in ``POST /invoke``: ZenML
hands an invoke's parameters to the steps' parameters of the same name, so each of them is also a step parameter:
``dataset``, ``users``, ``seed``, ``path`` (ingest; ``seed`` also seeds the source model's training),
``max_quarantine_share``, ``reports_dir`` (validate), ``kind`` (train_source), ``L`` (the +IAT and transfer
rankers' token history length), ``seeds`` (downstream training seeds: one base and one +IAT model per seed, and
the transfer rankers' seeds; None: the configs' seeds), ``epochs`` (all models, transfer included; None: each
model's train config), ``n_boot`` (bootstrap resamples). Invoke parameters that are left out take the defaults
of this signature.

What is bound when the pipeline is compiled or deployed (``end_to_end_pipeline``): the source model's and the
rankers' architecture and train configs (step parameters), the token dtype, the transfer config (its source kind
and domains; domains absent from the run's log fall back to the largest one as source), and the ZenML model names, which
contain the data set and the source kind: a deployment made for synthetic ``user_order`` refuses an invoke with
another ``dataset`` or ``kind`` (``train_source`` says so) — deploy one per data set and kind.
"""

from typing import Any, Dict, List, Optional

from zenml import pipeline
from zenml.enums import ExecutionMode  # a failed step ends the run with its own exception
from zenml.pipelines.pipeline_definition import Pipeline

from iat.model_names import ranker_model_name, source_model_name
from pipelines.data import data_steps
from steps.report import result_table
from steps.tokens import materialize_tokens
from steps.transfer import transfer_evaluation
from steps.train_ranker import train_ranker
from steps.train_source import train_source

BASE_STEP, IAT_STEP = "train_ranker_base", "train_ranker_iat"


@pipeline(enable_cache=True, execution_mode=ExecutionMode.FAIL_FAST)
def end_to_end(
    dataset: str = "synthetic",
    users: int = 1_000,
    seed: int = 0,
    path: Optional[str] = None,
    max_quarantine_share: float = 0.05,
    reports_dir: str = "reports/validation",
    kind: str = "user_order",
    L: int = 32,
    seeds: Optional[List[int]] = None,
    epochs: Optional[int] = None,
    n_boot: int = 200,
) -> Dict[str, Any]:
    """data -> source model -> token store -> base and +IAT rankers -> result table (the pipeline's output)."""
    split_df, schema = data_steps(dataset, users, seed, path, max_quarantine_share, reports_dir)
    bundle = train_source(split_df, schema, kind=kind, seed=seed, epochs=epochs, n_boot=n_boot)
    store = materialize_tokens(bundle, split_df)
    base, _ = train_ranker(split_df, schema, seeds=seeds, epochs=epochs, n_boot=n_boot, id=BASE_STEP)
    iat, _ = train_ranker(split_df, schema, token_store=store, L=L, seeds=seeds, epochs=epochs, n_boot=n_boot, id=IAT_STEP)
    # Transfer trains its own per-domain sources on the same split log (iat.transfer); its config is bound.
    _, transfer_md = transfer_evaluation(split_df, schema, L=L, seeds=seeds, epochs=epochs)
    table, _ = result_table(base, iat, split_df, transfer=transfer_md)
    return table


def end_to_end_pipeline(settings: Optional[Dict[str, Any]] = None, **binding: Any) -> Pipeline:
    """``end_to_end`` bound by ``run_configuration(**binding)`` (source kind, ranker specs, train and transfer
    configs); call it with the run parameters, or ``.deploy(name, **parameters)`` it."""
    return end_to_end.with_options(**run_configuration(**binding), **({"settings": settings} if settings else {}))


def run_configuration(
    kind: str,
    dataset: str,
    base_spec: Dict[str, Any],
    iat_spec: Dict[str, Any],
    source_model_config: Optional[Dict[str, Any]] = None,
    source_train_config: Optional[Dict[str, Any]] = None,
    ranker_train_config: Optional[Dict[str, Any]] = None,
    dtype: Optional[str] = None,
    post_sit: bool = False,
    transfer_config: Optional[Dict[str, Any]] = None,
) -> Dict[str, Any]:
    """The ZenML run configuration (``model`` and per-step ``steps``) that binds ``end_to_end``; as a dict
    it is also the ``-c`` file of ``zenml pipeline run|deploy pipelines.end_to_end.end_to_end``. ``dataset``: the
    data set's name in the model names (``iat.data.registry.dataset_name`` of the run's dataset and path)."""
    if base_spec.get("tokens") is not None or iat_spec.get("tokens") is None:
        raise ValueError("end_to_end: the base spec reads no tokens and the +IAT spec reads the token store")
    return {
        "model": {"name": source_model_name(dataset, kind), "description": f"IAT stage-I source model ({kind}) of {dataset}, its data and token store"},
        "steps": {
            "train_source": {"parameters": {"model_config": source_model_config, "train_config": source_train_config or {}, "dataset_name": dataset}},
            "materialize_tokens": {"parameters": {"dtype": dtype, "post_sit": post_sit}},
            "transfer_evaluation": {"parameters": {"config": transfer_config or {}}},
            BASE_STEP: {
                "parameters": {"spec": base_spec, "train_config": ranker_train_config or {}},
                "model": {"name": ranker_model_name(dataset, base_spec["name"]), "description": f"downstream ranker {base_spec}"},
            },
            IAT_STEP: {
                "parameters": {"spec": iat_spec, "train_config": ranker_train_config or {}},
                "model": {"name": ranker_model_name(dataset, iat_spec["name"]), "description": f"downstream ranker {iat_spec}"},
            },
        },
    }

