"""The IAT ranking service (BentoML 1.4): rank candidates, ingest new instances, record delayed labels.

Start-up loads one serving package (``iat.serving_package``) - the ranker, its feature encoders, the source
model that encodes new instances, and the token store - through ``iat.serving_core.ServingCore``. Where from:

- ``IAT_SERVING_PACKAGE``: a package folder (absolute, or relative to the source root, i.e. the folder holding
  ``serving/``), for serving a package without a Bento; otherwise the BentoML model the Bento lists under the alias
  ``serving-package`` (``serving.bento``: ``iat-serving-package:<version>``, pinned when the Bento was built);
- ``IAT_TOKEN_STORE``: the live store that ingest writes to (seeded from the package's snapshot on first
  start); default: the package's own store, in place. A Bento's files are immutable, so serve a Bento with it set.
- ``IAT_ONLINE_STORE``: a Redis URL (``redis://host:6379/0``): every replica reads and writes the one online store
  there (``iat.tokens.online``; seeded from the package's snapshot when empty) instead of a file store.

Endpoints: ``POST /rank``, ``POST /ingest``, ``POST /label``, ``POST /info``; BentoML's own ``/livez``
(liveness), ``/readyz`` (readiness: ``__is_ready__``, true once the model and the store are loaded and the
store is readable) and ``/metrics`` (Prometheus: BentoML's request counts and latencies,
plus this service's ``iat_*`` metrics).

Scoring: ``/rank`` validates its request and scores it in the calling API thread (``threads``, default 2), one
request per forward pass. There is no adaptive batching: a request of 100 candidates x L=256 is already a big batch
on a CPU (scoring 4 together cost more per request than one alone), and a dispatcher between ``/rank`` and the
model was a second hop (1.8x the in-process latency) whose learned wait stayed long after a burst. The only queue
is BentoML's admission: at most ``max_concurrency`` requests in flight, the rest answered 503 at once, and each
waits at most ``timeout`` seconds. A body above ``IAT_MAX_BODY_BYTES`` (default 4 MiB) is refused with 413 before it
is read whole (``serving.limits``).
Other environment: ``IAT_TORCH_THREADS`` (intra-op threads, default 1), ``IAT_DEVICE`` (where the ranker scores:
``cpu``, the default, or ``cuda``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import bentoml
from bentoml.exceptions import NotFound
from prometheus_client import Counter, Histogram
from starlette.responses import JSONResponse

from iat.serving_core import RequestError, ServingCore
from serving.bento import PACKAGE_ALIAS
from serving.limits import BodySizeLimit, max_body_bytes
from serving.api_models import (
    IngestResponse,
    Instance,
    LabelRequest,
    LabelResponse,
    RankRequest,
    RankResponse,
)

SOURCE_ROOT = Path(__file__).resolve().parent.parent

# prometheus_client directly (BentoML 1.4 deprecates bentoml.metrics): BentoML starts its workers with
# PROMETHEUS_MULTIPROC_DIR set, so these land in the same /metrics output as BentoML's own.
_INGESTED = Counter("iat_ingested_instances", "instances appended to the token store by /ingest")
_LABELS = Counter("iat_delayed_labels", "delayed conversion labels recorded by /label")
_CANDIDATES = Histogram("iat_rank_candidates", "candidates per /rank request", buckets=(1, 10, 50, 100, 200, 512))
_HISTORY = Histogram("iat_history_tokens", "instance tokens fetched per /rank request", buckets=(0, 1, 8, 32, 64, 128, 256, 512))


def package_path() -> Path:
    """``IAT_SERVING_PACKAGE`` if set, else the path of the Bento's package model; a clear error when neither."""
    if os.environ.get("IAT_SERVING_PACKAGE"):
        p = Path(os.environ["IAT_SERVING_PACKAGE"])
        return p if p.is_absolute() else SOURCE_ROOT / p
    try:
        return Path(bentoml.models.get(PACKAGE_ALIAS).path)
    except NotFound as e:
        raise RuntimeError(
            "no serving package: serve a Bento built by `iat package` (it carries the package as a BentoML model), "
            f"or set IAT_SERVING_PACKAGE to a package folder ({e})"
        ) from e


def _error(e: RequestError) -> JSONResponse:
    """The same shape as BentoML's answer to a pydantic error: a message and a list of {loc, msg}."""
    return JSONResponse({"error": str(e), "detail": [{"loc": list(e.loc), "msg": e.msg}]}, status_code=e.status)


@bentoml.service(
    name="iat-ranker",
    workers=1,  # one process owns the model and the writer side of the store; scale out with replicas
    threads=2,  # two requests score side by side (one intra-op thread each); ingest / label share the pool
    traffic={"timeout": 30, "max_concurrency": 64},
    metrics={"enabled": True, "namespace": "bentoml"},
)
class IATRanker:
    def __init__(self) -> None:
        import torch

        # One intra-op thread by default: the service's parallelism is across requests (two API
        # threads), and on a busy 2-core machine two intra-op threads scored a 100 x 256 batch 10x slower than one.
        torch.set_num_threads(int(os.environ.get("IAT_TORCH_THREADS", "1")))
        self.core = ServingCore.load(
            package_path(), store=os.environ.get("IAT_TOKEN_STORE"), device=os.environ.get("IAT_DEVICE", "cpu"), online=os.environ.get("IAT_ONLINE_STORE") or None
        )

    def __is_ready__(self) -> bool:
        try:
            self.core.view()  # reads the store's manifest (or the online store's live version): fails if it is gone
        except Exception:  # noqa: BLE001 - a vanished file store (OSError) or an unreachable Redis: not ready either way
            return False
        return True

    @bentoml.api(route="/rank")
    def rank(self, request: RankRequest, /) -> RankResponse:
        q = request.model_dump()
        q["ts"] = int(time.time()) if q["ts"] is None else q["ts"]
        try:
            (s,) = self.core.score_queries([q])
        except RequestError as e:
            return _error(e)  # type: ignore[return-value]
        _CANDIDATES.observe(len(request.candidates))
        _HISTORY.observe(int(s.tokens[0]))
        scores = [{"item_id": c["item_id"], "p_ctr": float(p), "p_cvr": float(v)} for c, p, v in zip(q["candidates"], s.p_ctr, s.p_cvr)]
        return RankResponse(
            user_id=request.user_id, ts=q["ts"], model_version=str(self.core.ranker.config["version"]),
            history_tokens=int(s.tokens[0]), history_clicks=int(s.clicks[0]), scores=scores,
        )  # fmt: skip

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


IATRanker.add_asgi_middleware(BodySizeLimit, max_bytes=max_body_bytes())
