"""Load test of the ranking service over HTTP on 127.0.0.1, against the same model scored in-process.

    python bench/bench_service.py [--candidates 100] [--L 256] [--concurrency 1 8 32] [--duration 30] [--burst 60]

Set-up (cached in ``--work``): a synthetic log, a temporal source model, its token store, and a ranker with an
IAT branch (``--iat``, L = ``--L``) trained for one epoch on a sample of the train split (serving cost does not
depend on how well the weights were trained), written as a serving package. Requests: users with at least L
tokens, at a ts after their last instance (so every request reads a full history of L tokens), the context
features of their last instance and ``--candidates`` candidates drawn from the log with their item features.

Measured:
- in-process ceiling: ``ServingCore.rank`` called back to back in this process (one request at a time), before
  the server starts and again after it stops (the machine may be shared; both are reported), and in the same
  phase the computation before issue 14's exact savings (``bench/reference_compute.py``: a history copy per
  candidate, every block row, DIN on the concatenation), alternating with the current one;
- paired: the same requests in-process and over HTTP with 1 client, alternating in blocks of 10 while the server
  runs (the HTTP / in-process ratio; phases minutes apart differ by the machine's drift, up to 2x here);
- the service (``bentoml serve``, a separate process) loaded from this process by C client threads for each C
  in ``--concurrency``: each phase lasts ``--duration`` s or ``--max-requests`` requests, whichever comes first;
  latency p50 / p95 / p99 / max and requests/s;
- recovery: lone 1-candidate requests, before and after a ``--burst`` s burst of 32 clients: the median before,
  and how long after the burst until a lone request is back within 1.5x of it;
- ingest under load: ``--ingest`` new instances posted one after another while 8 clients rank; afterwards
  the live store must hold every one of them (counted by id) and exactly that many more rows.

``--device cuda`` scores on the GPU, in-process and in the service (``IAT_DEVICE``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from iat.data.split import add_split  # noqa: E402
from iat.data.synthetic import generate  # noqa: E402
from iat.downstream import DownstreamData, DownstreamSpec, load_ranker, train_downstream  # noqa: E402
from iat.models.registry import train_source  # noqa: E402
from iat.serving_core import ServingCore  # noqa: E402
from iat.serving_package import read_package, snapshot_store, write_package  # noqa: E402
from iat.tokens import TokenStore  # noqa: E402
from iat.tokens.materialize import materialize  # noqa: E402
from iat.train import TrainConfig  # noqa: E402
from iatcli.env import setup_environment  # noqa: E402


def build(work: Path, users: int, seed: int, L: int, iat: str, train_rows: int) -> tuple[Path, pd.DataFrame]:
    pkg, log = work / "package", work / "log.parquet"
    if (pkg / "package.json").is_file() and log.is_file() and read_package(pkg).L == L:
        return pkg, pd.read_parquet(log)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t0 = time.perf_counter()
    df, schema = generate(users, seed=seed)
    df = add_split(df)
    cfg = TrainConfig(epochs=1, batch_size=1024)
    source = train_source(df, schema, "temporal", train_cfg=cfg, n_boot=0)
    store = materialize(source, df, work / "store")
    # train on a sample of the train split: the rest of the log still feeds the histories
    sub = df.copy()
    train = np.flatnonzero(sub["split"].to_numpy() == "train")
    drop = np.random.default_rng(seed).permutation(train)[train_rows:]
    sub.iloc[drop, sub.columns.get_loc("split")] = "unused"
    spec = DownstreamSpec("bench", config={"seq": "din", "iat": iat}, tokens="bench", L=L)
    ranker, _ = train_downstream(DownstreamData.prepare(sub, schema), spec, TokenStore.open(store), TrainConfig(epochs=1, batch_size=256), eval_splits=())
    write_package(pkg, ranker, source, store)
    df.to_parquet(log)
    print(f"set-up: {len(df):,} instances of {users} users, ranker trained on {min(train_rows, len(train)):,} rows, {time.perf_counter() - t0:.0f} s", flush=True)
    return pkg, df


def make_requests(df: pd.DataFrame, pkg: Path, L: int, candidates: int, n: int, seed: int) -> list[dict[str, Any]]:
    s = load_ranker(read_package(pkg).ranker_dir).encoder.schema
    counts = df.groupby("user_id").size()
    users = counts[counts >= L].index.to_numpy()
    if len(users) == 0:
        raise ValueError(f"no user has {L} instances: raise --users")
    rng = np.random.default_rng(seed)
    ts = int(df["ts"].max()) + 60
    last = df.sort_values("ts").groupby("user_id").tail(1).set_index("user_id")
    item_cols = [f.name for f in s.group("item") if f.name != "item_id"]
    ctx_cols = [f.name for f in s.features if f.group != "item" and f.name != "user_id"]
    out = []
    for i in range(n):
        u = int(users[i % len(users)])
        cands = df.iloc[rng.choice(len(df), candidates, replace=False)]
        out.append(
            {
                "user_id": u,
                "ts": ts,
                "domain": str(last.loc[u, "domain"]),
                "context": {c: _py(last.loc[u, c]) for c in ctx_cols},
                "candidates": [{"item_id": int(r["item_id"]), "features": {c: _py(r[c]) for c in item_cols}} for _, r in cands.iterrows()],
            }
        )
    return out


def _py(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def in_process(pkg: Path, store: Path, requests: list[dict[str, Any]], count: int, threads: int, device: str, before: bool = False) -> dict[str, Any]:
    """``count`` ranks back to back; with ``before``, also the computation before issue 14, the two alternating."""
    import torch

    from bench.reference_compute import reference

    torch.set_num_threads(threads)  # training in the set-up resets it to the core count
    core = ServingCore.load(pkg, store=store, device=device)
    lat: dict[str, list[float]] = {"now": [], "before": []}

    def rank(i: int) -> float:
        q = requests[i % len(requests)]
        t = time.perf_counter()
        s = core.rank(q["user_id"], q["ts"], q["context"], q["candidates"], q["domain"])
        if device == "cuda":
            torch.cuda.synchronize()
        assert s.tokens[0] > 0
        return time.perf_counter() - t

    rank(0)  # warm-up
    t0 = time.perf_counter()
    for i in range(count):
        lat["now"].append(rank(i))
    wall = time.perf_counter() - t0
    out = summary(lat["now"], wall, 0)
    if before:
        for i in range(0, count, 10):  # alternate blocks of 10 requests
            with reference(core.ranker.model):
                lat["before"] += [rank(j) for j in range(i, i + 10)]
            lat["now"] += [rank(j) for j in range(i, i + 10)]
        out["before"] = summary(lat["before"], sum(lat["before"]), 0)
        out["now_alternating"] = summary(lat["now"][count:], sum(lat["now"][count:]), 0)
    return out


def summary(lat: list[float], wall: float, errors: int) -> dict[str, Any]:
    a = np.asarray(lat) * 1000
    return {
        "n": len(lat),
        "errors": errors,
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "rps": len(lat) / wall,
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_phase(url: str, requests: list[dict[str, Any]], clients: int, duration: float, max_requests: int, ingest: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    lat: list[float] = []
    errors = [0]
    ingested: list[int] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + duration
    issued = [0]

    def take() -> int | None:
        with lock:
            if issued[0] >= max_requests or time.perf_counter() >= deadline:
                return None
            issued[0] += 1
            return issued[0]

    def ranker(k: int) -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            while (i := take()) is not None:
                t = time.perf_counter()
                r = c.post("/rank", content=encoded[(i * 7 + k) % len(encoded)], headers={"content-type": "application/json"})
                dt = time.perf_counter() - t
                with lock:
                    if r.status_code == 200:
                        lat.append(dt)
                    else:
                        errors[0] += 1

    def ingester() -> None:
        with httpx.Client(base_url=url, timeout=300) as c:
            for inst in ingest or []:
                r = c.post("/ingest", json=inst)
                if r.status_code == 200:
                    ingested.append(inst["instance_id"])
                else:
                    print(f"ingest {inst['instance_id']}: {r.status_code} {r.text[:200]}", flush=True)

    encoded = [json.dumps(q).encode() for q in requests]  # encoded once: the client's CPU is the server's too
    threads = [threading.Thread(target=ranker, args=(k,)) for k in range(clients)]
    if ingest:
        threads.append(threading.Thread(target=ingester))
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    out = summary(lat, wall, errors[0])
    out["ingested_ok"] = len(ingested)
    out["ingested_ids"] = ingested
    return out


def paired(url: str, pkg: Path, store: Path, requests: list[dict[str, Any]], count: int, threads: int, device: str) -> dict[str, Any]:
    """The same requests in-process and over HTTP (1 client), alternating in blocks of 10: the machine's speed
    drifts by up to 2x within minutes here, so only a ratio measured side by side says what HTTP costs."""
    import torch

    torch.set_num_threads(threads)
    core = ServingCore.load(pkg, store=store, device=device)
    for q in requests[:5]:  # warm-up: a fresh core's first calls are not what a request costs
        core.rank(q["user_id"], q["ts"], q["context"], q["candidates"], q["domain"])
    encoded = [json.dumps(q).encode() for q in requests]
    lat: dict[str, list[float]] = {"in_process": [], "http": []}
    with httpx.Client(base_url=url, timeout=300) as c:
        for start in range(0, count, 10):
            for i in range(start, start + 10):
                q = requests[i % len(requests)]
                t = time.perf_counter()
                core.rank(q["user_id"], q["ts"], q["context"], q["candidates"], q["domain"])
                lat["in_process"].append(time.perf_counter() - t)
            for i in range(start, start + 10):
                t = time.perf_counter()
                r = c.post("/rank", content=encoded[i % len(encoded)], headers={"content-type": "application/json"})
                r.raise_for_status()
                lat["http"].append(time.perf_counter() - t)
    return {k: summary(v, sum(v), 0) for k, v in lat.items()}


def recovery(url: str, requests: list[dict[str, Any]], burst: float, probes: int = 20) -> dict[str, Any]:
    """Lone 1-candidate ranks before and after ``burst`` s of 32 clients: how long until one is back within 1.5x of
    the median before (probes every 0.25 s for at most 30 s)."""
    lone = dict(requests[0], candidates=requests[0]["candidates"][:1])
    with httpx.Client(base_url=url, timeout=300) as c:

        def once() -> float:
            t = time.perf_counter()
            r = c.post("/rank", json=lone)
            r.raise_for_status()
            return time.perf_counter() - t

        before = [once() for _ in range(probes)]
        median = float(np.median(before))
        load = load_phase(url, requests, 32, burst, 10**9)
        t_end = time.perf_counter()
        after: list[tuple[float, float]] = []
        back = None
        while time.perf_counter() - t_end < 30:
            dt = once()
            after.append((time.perf_counter() - t_end, dt))
            if back is None and dt <= 1.5 * median:
                back = after[-1][0]
            if back is not None and len(after) >= probes:
                break
            time.sleep(0.25)
    return {
        "lone_median_before_ms": 1000 * median,
        "burst": {k: v for k, v in load.items() if k != "ingested_ids"},
        "first_after_ms": 1000 * after[0][1],
        "median_after_ms": 1000 * float(np.median([d for _, d in after])),
        "back_within_1_5x_after_s": back,
    }


def ingest_bodies(df: pd.DataFrame, pkg: Path, n: int, seed: int) -> list[dict[str, Any]]:
    s = load_ranker(read_package(pkg).ranker_dir).encoder.schema
    rows = df.sample(n, random_state=seed)
    ts0, id0 = int(df["ts"].max()) + 1, int(df["instance_id"].max()) + 1
    out = []
    for i, (_, r) in enumerate(rows.iterrows()):
        feats = {f.name: _py(r[f.name]) for f in s.features if f.name not in ("user_id", "item_id")}
        out.append({"instance_id": id0 + i, "user_id": int(r["user_id"]), "item_id": int(r["item_id"]), "ts": ts0 + i, "domain": str(r["domain"]), "click": int(r["click"]), "features": feats})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default=str(REPO / "data" / "bench_service"), help="set-up cache folder")
    ap.add_argument("--users", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--L", type=int, default=256)
    ap.add_argument("--iat", default="din", choices=["din", "transformer", "longer"])
    ap.add_argument("--train-rows", type=int, default=3000)
    ap.add_argument("--candidates", type=int, default=100)
    ap.add_argument("--requests", type=int, default=64, help="distinct requests, cycled")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--duration", type=float, default=30.0, help="seconds per load phase")
    ap.add_argument("--max-requests", type=int, default=1000, help="requests per load phase at most")
    ap.add_argument("--inproc-requests", type=int, default=100)
    ap.add_argument("--ingest", type=int, default=40, help="instances ingested while 8 clients rank")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads, in-process and in the service")
    ap.add_argument("--burst", type=float, default=60.0, help="seconds of the 32-client burst before the recovery probes (0: skip)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the ranker scores (in-process and in the service)")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    if a.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda: torch sees no CUDA device")
    setup_environment()  # BentoML's home inside the project, never the user's
    work = Path(a.work)
    pkg, df = build(work, a.users, a.seed, a.L, a.iat, a.train_rows)
    requests = make_requests(df, pkg, a.L, a.candidates, a.requests, a.seed)
    results: dict[str, Any] = {"config": {k: v for k, v in vars(a).items() if k != "out"}, "load_before": os.getloadavg()}

    def fresh_store(name: str) -> Path:
        p = work / name
        shutil.rmtree(p, ignore_errors=True)
        return snapshot_store(read_package(pkg).store_dir, p)

    results["in_process_before"] = in_process(pkg, fresh_store("inproc"), requests, a.inproc_requests, a.threads, a.device, before=True)
    print(f"in-process: {results['in_process_before']}", flush=True)

    live = fresh_store("live")
    rows0 = TokenStore.open(live).rows
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "IAT_SERVING_PACKAGE": str(pkg), "IAT_TOKEN_STORE": str(live), "IAT_TORCH_THREADS": str(a.threads), "IAT_DEVICE": a.device}
    cmd = [sys.executable, "-m", "bentoml", "serve", "serving.service:IATRanker", "--host", "127.0.0.1", "--port", str(port), "--working-dir", str(REPO)]
    log = open(work / "service.log", "w")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"service exited; see {work / 'service.log'}")
            try:
                if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("service not ready in 300 s")
            time.sleep(0.5)
        load_phase(url, requests, 2, 5, 4)  # warm-up
        results["paired"] = paired(url, pkg, fresh_store("inproc"), requests, a.inproc_requests * 2, a.threads, a.device)
        print(f"paired: {results['paired']}", flush=True)
        for c in a.concurrency:
            r = load_phase(url, requests, c, a.duration, a.max_requests)
            r.pop("ingested_ids")
            results[f"http_c{c}"] = r
            print(f"http c={c}: {r}", flush=True)
        if a.burst > 0:
            results["recovery"] = recovery(url, requests, a.burst)
            print(f"recovery: {results['recovery']}", flush=True)
        bodies = ingest_bodies(df, pkg, a.ingest, a.seed)
        r = load_phase(url, requests, 8, a.duration, a.max_requests, ingest=bodies)
        info = httpx.post(f"{url}/info", json={}, timeout=30).json()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process group this bench started
            proc.wait(60)
        log.close()
    store = TokenStore.open(live)
    ids = np.array([b["instance_id"] for b in bodies])
    found = int((store.locate_instances(ids)[0] >= 0).sum())
    r["ingest"] = {"sent": len(bodies), "acknowledged": r.pop("ingested_ok"), "in_store": found, "rows_added": store.rows - rows0, "service_rows_added": info["store"]["rows"] - rows0}
    r.pop("ingested_ids")
    results["http_c8_with_ingest"] = r
    print(f"http c=8 + ingest: {r}", flush=True)
    results["in_process_after"] = in_process(pkg, fresh_store("inproc"), requests, a.inproc_requests, a.threads, a.device)
    results["load_after"] = os.getloadavg()
    print(f"in-process: {results['in_process_after']}", flush=True)
    print(table(results))
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=2))


def table(res: dict[str, Any]) -> str:
    c = res["config"]
    ip = res["in_process_before"]
    ceiling = (ip["rps"] + res["in_process_after"]["rps"]) / 2
    lines = [
        f"{c['candidates']} candidates per request, L={c['L']} ({c['iat']} F_iat), {c['threads']} torch thread(s), device {c['device']}; "
        f"load average {res['load_before'][0]:.2f} before, {res['load_after'][0]:.2f} after ({os.cpu_count()} cores)",
        "",
        "| run | requests | errors | p50 ms | p95 ms | p99 ms | max ms | requests/s | / in-process |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def row(name: str, r: dict[str, Any]) -> str:
        return f"| {name} | {r['n']} | {r['errors']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['rps']:.2f} | {r['rps'] / ceiling:.2f} |"

    lines.append(row("in-process (start)", ip))
    lines.append(row("in-process, before issue 14 (alternating)", ip["before"]))
    lines.append(row("in-process, now (alternating)", ip["now_alternating"]))
    lines.append(row("in-process (end)", res["in_process_after"]))
    lines.append(row("in-process, paired with HTTP (alternating)", res["paired"]["in_process"]))
    lines.append(row("HTTP, 1 client, paired (alternating)", res["paired"]["http"]))
    for key in [k for k in res if k.startswith("http_")]:
        name = key.replace("http_c", "HTTP, ").replace("_with_ingest", " + ingest") + (" clients" if "ingest" not in key else "")
        lines.append(row(name, res[key]))
    if "recovery" in res:
        rec = res["recovery"]
        lines.append(row(f"HTTP, 32 clients, {c['burst']:.0f} s burst", rec["burst"]))
    lines.append("")
    lines.append(
        f"in-process p50: before issue 14 {ip['before']['p50_ms']:.1f} ms, now {ip['now_alternating']['p50_ms']:.1f} ms "
        f"({ip['before']['p50_ms'] / ip['now_alternating']['p50_ms']:.2f}x); HTTP 1 client p50 / in-process p50, paired: "
        f"{res['paired']['http']['p50_ms'] / res['paired']['in_process']['p50_ms']:.2f}x"
    )
    if "recovery" in res:
        back = rec["back_within_1_5x_after_s"]
        lines.append(
            f"lone 1-candidate request: median {rec['lone_median_before_ms']:.1f} ms before the burst; first after it "
            f"{rec['first_after_ms']:.1f} ms, median after {rec['median_after_ms']:.1f} ms; back within 1.5x "
            + (f"{back:.2f} s after the burst" if back is not None else "not within 30 s")
        )
    ing = res["http_c8_with_ingest"]["ingest"]
    lines.append(
        f"ingest under load: {ing['sent']} sent, {ing['acknowledged']} acknowledged, {ing['in_store']} found in the store by id, "
        f"store grew by {ing['rows_added']} rows (the service reports {ing['service_rows_added']})"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
