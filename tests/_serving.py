"""Shared by the serving tests: one tiny trained serving package (built once per test session), requests made
from logged rows, and the real service started as a subprocess on 127.0.0.1."""

from __future__ import annotations

import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

from iat.data.split import add_split
from iat.data.synthetic import generate
from iat.downstream import DownstreamData, DownstreamSpec, RankerBundle, train_downstream
from iat.history import HistoryAssembler
from iat.models.batching import RowBatches
from iat.models.registry import SourceBundle, train_source
from iat.schema import Schema
from iat.serving_package import write_package
from iat.tokens.materialize import materialize
from iat.tokens.store import TokenStore
from iat.train import TrainConfig, predict_all

REPO = Path(__file__).resolve().parent.parent
TINY_SOURCE = {"d_e": 4, "d_group": 8, "cross_layers": 1, "cross_rank": 8, "hidden": [32, 32], "D": 16, "decompress": [16]}
RANKER_CONFIG = {"seq": "din", "iat": "transformer", "hidden": [32], "d_iat": 16, "d_seq": 8}
L = 32


@dataclass(frozen=True)
class Built:
    root: Path
    df: pd.DataFrame
    schema: Schema
    data: DownstreamData
    source: SourceBundle
    ranker: RankerBundle
    store: Path  # the store the ranker was trained on (never written by the tests)
    package: Path


@functools.cache
def built() -> Built:
    """generate(150 users) -> time split -> temporal source (1 epoch) -> tokens -> ranker with an IAT branch
    (Transformer F_iat, L=32, 1 epoch) -> serving package. About 20 s on 2 cores; built once per session."""
    root = Path(tempfile.mkdtemp(prefix="serving-", dir=os.environ.get("IAT_HOME")))
    df, schema = generate(150, seed=11, progress=False)
    df = add_split(df)
    cfg = TrainConfig(epochs=1, batch_size=4096, progress=False)
    source = train_source(df, schema, "temporal", TINY_SOURCE, cfg, n_boot=0)
    store = materialize(source, df, root / "store", progress=False)
    data = DownstreamData.prepare(df, schema)
    spec = DownstreamSpec("t", config=RANKER_CONFIG, tokens="t", L=L)
    ranker, _ = train_downstream(data, spec, TokenStore.open(store), cfg)
    pkg = write_package(root / "package", ranker, source, store, labels={"zenml_model": "iat-ranker-t", "zenml_model_version": "test"})
    return Built(root, df, schema, data, source, ranker, store, pkg.root)


def offline_scores(b: Built, rows: pd.DataFrame) -> dict[str, np.ndarray]:
    """The trained ranker scoring ``rows`` as evaluation does (the training store and the log's click index).
    ``rows`` must be in (ts, instance_id) order, the order RowBatches scores them in."""
    assert rows.set_index(["ts", "instance_id"]).index.is_monotonic_increasing
    spec = b.ranker.spec
    asm = HistoryAssembler(b.data.encoder, TokenStore.open(b.store), b.data.clicks, L=spec.L, base_L=spec.base_L)
    return predict_all(b.ranker.model, RowBatches(b.data.encoder.transform(rows), 64, assemble=asm.batch))


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def query_of(row: pd.Series, schema: Schema, extra_items: pd.DataFrame | None = None) -> dict[str, Any]:
    """A rank request for a logged row: its user, ts, domain and user / context / cross features as the context,
    its item (and item features) as the first candidate, then the items of ``extra_items``."""
    ctx = {f.name: _py(row[f.name]) for f in schema.features if f.group != "item" and f.name != "user_id"}
    items = [row] + ([] if extra_items is None else [r for _, r in extra_items.iterrows()])
    cands = [{"item_id": int(r["item_id"]), "features": {f.name: _py(r[f.name]) for f in schema.group("item") if f.name != "item_id"}} for r in items]
    return {"user_id": int(row["user_id"]), "ts": int(row["ts"]), "domain": str(row["domain"]), "context": ctx, "candidates": cands}


def instance_of(row: pd.Series, schema: Schema, **override: Any) -> dict[str, Any]:
    """An ingest body for a logged row (its features and click), with fields replaced by ``override``."""
    feats = {f.name: _py(row[f.name]) for f in schema.features if f.name not in ("user_id", "item_id")}
    inst = {k: _py(row[k]) for k in ("instance_id", "user_id", "item_id", "ts", "domain", "click")}
    inst.update(conversion=None, conversion_ts=None, features=feats)
    inst.update(override)
    return inst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Service:
    """``bentoml serve serving.service:IATRanker`` (or a Bento) on 127.0.0.1 in its own process group."""

    def __init__(self, env: dict[str, str], target: str = "serving.service:IATRanker", port: int | None = None, cmd: list[str] | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "IAT_TORCH_THREADS": "1", **env}
        self.cmd = cmd or [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(self.port), "--working-dir", str(REPO)]
        self.log = tempfile.NamedTemporaryFile(prefix="service-", suffix=".log", delete=False)
        self.proc = subprocess.Popen(self.cmd, env=full_env, cwd=REPO, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.client = httpx.Client(base_url=self.url, timeout=60)

    def wait_ready(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"service exited with {self.proc.returncode}:\n{self.logs()}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"service not ready after {timeout} s:\n{self.logs()}")

    def logs(self, full: bool = False) -> str:
        text = Path(self.log.name).read_text()
        return text if full else text[-5000:]

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        self.client.close()
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group we started: the CLI and its worker
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        Path(self.log.name).unlink(missing_ok=True)
