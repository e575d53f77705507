from typing import Annotated, Any, Dict, List, Optional, Tuple

import pandas as pd
from zenml import get_step_context, log_metadata, step
from zenml.exceptions import StepContextError
from zenml.types import MarkdownString

from iat.dist_train import train_downstream_with
from iat.downstream import DownstreamData, DownstreamSpec, RankerBundle
from iat.models.registry import SourceBundle
from iat.report import model_card
from iat.limits import check_run_bounds
from iat.schema import Schema
from iat.tokens import TokenStore
from iat.train import TrainConfig
from steps.materializers import RankerBundleMaterializer


@step(output_materializers={"ranker": RankerBundleMaterializer})
def train_ranker(
    split_instances: pd.DataFrame,
    schema: dict,
    spec: Dict[str, Any],
    token_store: Optional[Dict[str, Any]] = None,
    tokenizer: Optional[SourceBundle] = None,
    train_config: Optional[Dict[str, Any]] = None,
    n_boot: int = 200,
    L: Optional[int] = None,
    epochs: Optional[int] = None,
    seeds: Optional[List[int]] = None,
    processes: int = 1,
) -> Tuple[Annotated[RankerBundle, "ranker"], Annotated[MarkdownString, "model_card"]]:
    """Train one downstream ranking model (base, +IAT or SIF-Mixer) on the train split, early stopping on
    valid, and score valid / test with user-bootstrap CIs; metrics go to the ranker's ZenML model version.

    ``L`` (token history length, for a spec that reads tokens) and ``epochs`` override the spec's / the train
    config's. ``seeds``: train one model per seed (the train config's seed by default); the artifact is the
    model of the first seed, and ``metrics["seeds"]`` holds every seed's valid / test metrics. ``model_card``: the
    same in markdown, rendered in the run view (the open-source dashboard has no model page).
    ``processes`` > 1: train with that many DDP processes on this machine (torchrun; users sharded across them,
    ``batch_size`` stays the global batch); each bundle comes back from rank 0.
    """
    check_run_bounds(L=L, epochs=epochs, n_boot=n_boot, seeds=seeds, processes=processes)
    spec = dict(spec)
    if L is not None and spec.get("tokens") is not None:
        spec["L"] = int(L)
    s = DownstreamSpec(**spec)
    cfg = dict(train_config or {})
    if epochs is not None:
        cfg["epochs"] = int(epochs)
    run_seeds = [int(x) for x in seeds] if seeds else [int(cfg.get("seed", 0))]
    if len(set(run_seeds)) != len(run_seeds):
        raise ValueError(f"seeds must be distinct, got {run_seeds}")
    store = TokenStore.open(token_store["path"], expected_source=token_store["source"]) if token_store else None
    data = DownstreamData.prepare(split_instances, Schema.from_dict(schema))
    bundle, metrics, results = None, {}, []
    for seed in run_seeds:
        b, m = train_downstream_with(processes, data, s, store, TrainConfig(**{**cfg, "seed": seed}), tokenizer, n_boot=n_boot)
        results.append({"seed": seed, "valid": m["valid"], "test": m["test"], "best_epoch": m["best_epoch"]})
        if bundle is None:
            bundle, metrics = b, m
    metrics["seeds"] = results  # the same dict as bundle.metrics: saved with the bundle
    log_metadata(
        {
            "spec": spec,
            "valid": metrics["valid"],
            "test": metrics["test"],
            "params": metrics["params"],
            "token_source": bundle.config["token_source"] or "none",
            "seeds": run_seeds,
            "test_by_seed": {str(r["seed"]): {k: r["test"][k] for k in ("auc", "gauc", "logloss")} for r in results},
            # lineage in words: which token store (and so which source model version) fed this ranker
            "token_store": {k: token_store[k] for k in ("path", "dtype", "rows")} if token_store else "none",
        },
        infer_model=True,
    )
    try:
        mv = get_step_context().model
        name = f"{mv.name} v{mv.number}"
    except StepContextError:  # a run without a ZenML model: the spec names the ranker
        name = s.name
    return bundle, MarkdownString(model_card(name, spec, metrics, token_store))
