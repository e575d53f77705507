"""The IAT ranking service (BentoML 1.4): rank candidates, ingest new instances, record delayed labels.

Start-up loads one serving package (``iat.serving_package``) - the ranker, its feature encoders, the source
model that encodes new instances, and the token store - through ``iat.serving_core.ServingCore``. Where from:

- ``IAT_SERVING_PACKAGE``: the package folder (absolute, or relative to the source root, i.e. the folder
  holding ``serving/``; a Bento built by ``steps/package.py`` carries it as ``package/``, the default);
- ``IAT_TOKEN_STORE``: the live store that ingest writes to (seeded from the package's snapshot on first
  start); default: the package's own store, in place. A Bento's files are immutable, so serve a Bento with it set.

Endpoints: ``POST /rank``, ``POST /ingest``, ``POST /label``, ``POST /info``; BentoML's own ``/livez``
(liveness), ``/readyz`` (readiness: ``__is_ready__``, true once the model and the store are loaded and the
store is readable) and ``/metrics`` (Prometheus: BentoML's request counts / latencies / adaptive batch sizes,
plus this service's ``iat_*`` metrics).

Adaptive batching: ``/rank`` takes one request with nested candidates, which BentoML cannot batch as such (a
batchable API takes and returns a list). So ``rank`` validates its request, then hands it to the batchable
``score_batch`` API through the service's own client (``self.to_async``: an in-process ASGI call, no socket),
where BentoML's dispatcher gathers the requests of concurrent callers into one list: the core scores all their
candidates in a single forward pass and the results go back to each caller. The batch unit is a request
(its candidates travel together); ``IAT_MAX_BATCH_REQUESTS`` (default 4) bounds requests per forward pass.
Other environment: ``IAT_TORCH_THREADS`` (intra-op threads, default 1).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import bentoml
from prometheus_client import Counter, Histogram
from starlette.responses import JSONResponse

from iat.serving_core import RequestError, ServingCore
from serving.api_models import (
    IngestResponse,
    Instance,
    LabelRequest,
    LabelResponse,
    RankRequest,
    RankResponse,
)

SOURCE_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_PACKAGE = "package"
# Requests per forward pass. On CPU a request of 100 candidates x L=256 is already a big batch: scoring 4 together
# cost 12% more per request than one alone, 8 or more nearly 2x (memory-bound), so the cap stays small (bench/).
MAX_BATCH_REQUESTS = int(os.environ.get("IAT_MAX_BATCH_REQUESTS", "4"))

# prometheus_client directly (BentoML 1.4 deprecates bentoml.metrics): BentoML starts its workers with
# PROMETHEUS_MULTIPROC_DIR set, so these land in the same /metrics output as BentoML's own.
_INGESTED = Counter("iat_ingested_instances", "instances appended to the token store by /ingest")
_LABELS = Counter("iat_delayed_labels", "delayed conversion labels recorded by /label")
_CANDIDATES = Histogram("iat_rank_candidates", "candidates per /rank request", buckets=(1, 10, 50, 100, 200, 512))
_HISTORY = Histogram("iat_history_tokens", "instance tokens fetched per /rank request", buckets=(0, 1, 8, 32, 64, 128, 256, 512))


def package_path() -> Path:
    p = Path(os.environ.get("IAT_SERVING_PACKAGE", DEFAULT_PACKAGE))
    return p if p.is_absolute() else SOURCE_ROOT / p


def _error(e: RequestError) -> JSONResponse:
    """The same shape as BentoML's answer to a pydantic error: a message and a list of {loc, msg}."""
    return JSONResponse({"error": str(e), "detail": [{"loc": list(e.loc), "msg": e.msg}]}, status_code=e.status)


@bentoml.service(
    name="iat-ranker",
    workers=1,  # one process owns the model and the writer side of the store; scale out with replicas
    threads=2,  # score_batch and ingest / label may run side by side
    traffic={"timeout": 30, "max_concurrency": 256},
    # rank -> score_batch goes through the service's own client, an aiohttp session over an in-process ASGI
    # connector. BentoML 1.4.39 replaces that session every 100 requests and closes the old one under requests
    # still in flight on it, which then fail (bentoml/BentoML#5540, #5544; seen here as ~2% 500s at 8 clients).
    # In-process there is no stale connection to guard against, so the session is kept for the process's life.
    runner_connection={"max_requests": 2**31 - 1, "max_age": 1e12},
    metrics={"enabled": True, "namespace": "bentoml"},
)
class IATRanker:
    def __init__(self) -> None:
        import torch

        # One intra-op thread by default: the service's parallelism is across requests (adaptive batches, two API
        # threads), and on a busy 2-core machine two intra-op threads scored a 100 x 256 batch 10x slower than one.
        torch.set_num_threads(int(os.environ.get("IAT_TORCH_THREADS", "1")))
        self.core = ServingCore.load(package_path(), store=os.environ.get("IAT_TOKEN_STORE"))

    def __is_ready__(self) -> bool:
        try:
            self.core.view()  # reads the store's manifest: fails if the store vanished
        except OSError:
            return False
        return True

    @bentoml.api(route="/rank")
    async def rank(self, request: RankRequest, /) -> RankResponse:
        if request.ts is None:
            request = request.model_copy(update={"ts": int(time.time())})
        try:
            self.core.check_query(request.model_dump())  # fail fast, before taking a place in a batch
        except RequestError as e:
            return _error(e)  # type: ignore[return-value]
        (out,) = await self.to_async.score_batch([request])  # type: ignore[attr-defined]  # set by BentoML at start-up
        _CANDIDATES.observe(len(request.candidates))
        _HISTORY.observe(out["history_tokens"])
        return RankResponse(user_id=request.user_id, ts=request.ts, **out)

    @bentoml.api(route="/score_batch", batchable=True, max_batch_size=MAX_BATCH_REQUESTS, max_latency_ms=30_000)
    def score_batch(self, requests: list[RankRequest]) -> list[dict[str, Any]]:
        """The batch unit of ``/rank`` (call ``/rank`` instead): all valid requests of a batch are scored in one
        forward pass; an invalid one gets ``{"error", "loc"}`` in its place and spoils nobody else's answer."""
        queries = [r.model_dump() for r in requests]
        errors: dict[int, RequestError] = {}
        for i, q in enumerate(queries):
            q["ts"] = int(time.time()) if q["ts"] is None else q["ts"]
            try:
                self.core.check_query(q)
            except RequestError as e:
                errors[i] = e
        valid = [q for i, q in enumerate(queries) if i not in errors]
        scored = iter(self.core.score_frame(self.core.query_frame(valid)).split([len(q["candidates"]) for q in valid]) if valid else [])
        version = str(self.core.ranker.config["version"])
        out: list[dict[str, Any]] = []
        for i, q in enumerate(queries):
            if i in errors:
                out.append({"error": str(errors[i]), "loc": list(errors[i].loc)})
                continue
            s = next(scored)
            scores = [{"item_id": c["item_id"], "p_ctr": float(p), "p_cvr": float(v)} for c, p, v in zip(q["candidates"], s.p_ctr, s.p_cvr)]
            out.append({"model_version": version, "history_tokens": int(s.tokens[0]), "history_clicks": int(s.clicks[0]), "scores": scores})
        return out

    @bentoml.api(route="/ingest")
    def ingest(self, instance: Instance, /) -> IngestResponse:
        try:
            out = self.core.ingest(instance.model_dump())
        except RequestError as e:
            return _error(e)  # type: ignore[return-value]
        _INGESTED.inc()
        return IngestResponse(**out)

    @bentoml.api(route="/label")
    def label(self, request: LabelRequest, /) -> LabelResponse:
        try:
            out = self.core.label(request.instance_id, request.conversion_ts, request.conversion)
        except RequestError as e:
            return _error(e)  # type: ignore[return-value]
        _LABELS.inc()
        return LabelResponse(**out)

    @bentoml.api(route="/info")
    def info(self) -> dict[str, Any]:
        """Which ranker, source model and store version this replica serves."""
        return self.core.info()
