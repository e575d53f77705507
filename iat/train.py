"""One training loop for every model: early stopping on validation AUC, atomic checkpoints, exact resume.

The model protocol (see the source models): ``loss(batch) -> (scalar, logs)``, ``predict(batch) -> {p, y, user}``
over the batch's scored positions, ``config`` (JSON-able). Batches come from a ``BatchSource`` whose
``batches(epoch)`` is a pure function of (its own seed, epoch): it must not draw from the global RNGs, so that
skipping the batches already done on resume yields exactly the batches an uninterrupted run would see.

Resume: a checkpoint holds the model, the optimizer, the torch / numpy / python RNG states, the epoch, the number
of batches done in it, the best weights so far and the history. ``fit`` on a directory holding one continues
from there and ends with the same weights, bit for bit, as a run that was never interrupted (same threads).

Distributed (``iat.distributed``, under torchrun): the same ``fit`` on every rank, each with its shard of users'
batches; DDP averages the gradients, validation metrics are computed over all ranks' predictions (so every rank
takes the same early-stopping decision), and only rank 0 writes the checkpoint (with every rank's RNG states).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import pickle
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from iat import distributed as dist
from iat.metrics import evaluate

CHECKPOINT_FILE = "checkpoint.pt"


@dataclass
class TrainConfig:
    epochs: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0  # L2 (Adam's coupled form) on the parameters (on the embedding tables too, unless embedding_decay)
    # L2 on the embedding tables (Adam's coupled form); None: weight_decay. Coupled L2 under Adam shrinks the rows
    # a batch rarely touches the most (their gradient is mostly the decay): the id memorisation that overfits.
    embedding_decay: float | None = None
    batch_size: int = 1024  # read by the batch sources; recorded here so the run config is one object
    patience: int = 1  # early stopping: stop after this many epochs without a valid AUC improvement (0: never)
    seed: int = 0
    checkpoint_every: int = 100  # steps
    threads: int | None = None  # None -> the cores this process may use, shared among the processes on this machine
    progress: bool = True
    grad_clip: float | None = 1.0

    def __post_init__(self) -> None:
        for f in fields(self):  # a config file's "fast" or "4" for a number: say which field, not a TypeError
            v, kind = getattr(self, f.name), str(f.type)
            if (v is None and "None" in kind) or f.name == "progress":
                continue
            number = isinstance(v, (int, float)) and not isinstance(v, bool)
            if not number or (kind.startswith("int") and not isinstance(v, int)):
                raise ValueError(f"TrainConfig.{f.name} must be {'a whole number' if kind.startswith('int') else 'a number'}, got {v!r}")
        for name in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"TrainConfig.patience must be >= 0, got {self.patience}")
        if self.lr <= 0:
            raise ValueError(f"TrainConfig.lr must be > 0, got {self.lr}")


@dataclass
class TrainResult:
    best_epoch: int
    best_valid: dict
    history: list[dict]
    checkpoint_dir: Path | None
    samples_per_s: float


class BatchSource(Protocol):
    def __len__(self) -> int:
        """Batches per epoch."""
        ...

    def batches(self, epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        """The epoch's batches; deterministic for (the source's seed, epoch), independent of global RNGs."""
        ...


def cores() -> int:
    """Cores this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> int:
    n = threads or max(1, cores() // dist.local_world_size())
    torch.set_num_threads(n)
    return n


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def batch_samples(batch: dict[str, torch.Tensor]) -> int:
    """Instances a batch trains on: the mask's count for sequence batches, else the leading dimension."""
    if "mask" in batch:
        return int(batch["mask"].sum())
    return int(next(iter(batch.values())).shape[0])


@torch.no_grad()
def predict_all(model: nn.Module, batches: BatchSource) -> dict[str, np.ndarray]:
    """Concatenated ``predict`` outputs over a whole source (this rank's shard under DDP), in eval mode."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {}
    try:
        for batch in batches.batches(0):
            for k, v in model.predict(dist.to_device(batch, dev)).items():
                parts.setdefault(k, []).append(v.detach().cpu().numpy())
    finally:
        model.train(was_training)
    if not parts:
        raise ValueError("cannot evaluate: the batch source yielded no batches")
    return {k: np.concatenate(v) for k, v in parts.items()}


# What ``predict`` returns per task: (score key, label key). Conversion labels are NaN where there is none
# (not clicked): those rows are left out, so the conversion metrics are pCVR over clicked rows.
TASK_KEYS: dict[str, tuple[str, str]] = {"click": ("p", "y"), "conversion": ("p_conv", "y_conversion")}


def evaluate_model(
    model: nn.Module, batches: BatchSource, n_boot: int = 0, seed: int = 0, task: str = "click", returning_users: np.ndarray | None = None
) -> dict:
    """AUC, GAUC, LogLoss of the model's pCTR (``task='click'``) or pCVR on clicked rows (``'conversion'``) on the
    source's scored positions (+ user-bootstrap CIs if n_boot). ``returning_users`` (e.g. the train split's users):
    also the metrics of the rows of those users (``returning``) and of the others (``new``)."""
    if task not in TASK_KEYS:
        raise ValueError(f"task must be one of {sorted(TASK_KEYS)}, got '{task}'")
    # Under DDP every rank scores its shard; rank 0 scores all shards together and shares the metrics.
    shards = dist.gather_to_main(predict_all(model, batches))
    if shards is None:
        return dist.broadcast_from_main({})
    out = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
    p_key, y_key = TASK_KEYS[task]
    if p_key not in out or y_key not in out:
        raise ValueError(f"{type(model).__name__}.predict returns no '{p_key}' / '{y_key}': it cannot be scored on '{task}'")
    y = out[y_key].astype(np.float64)
    keep = ~np.isnan(y)
    if not keep.any():
        raise ValueError(f"no labelled rows to score '{task}' on")
    y, p, users = y[keep].astype(np.int8), out[p_key][keep].astype(np.float64), out["user"][keep]
    return dist.broadcast_from_main(evaluate_segments(y, p, users, n_boot, seed, returning_users))


def evaluate_segments(y: np.ndarray, p: np.ndarray, users: np.ndarray, n_boot: int, seed: int, returning_users: np.ndarray | None) -> dict:
    """``iat.metrics.evaluate``, plus the same for returning and new users when ``returning_users`` is given (a
    segment whose rows hold one class only is left out)."""
    metrics = evaluate(y, p, users, n_boot=n_boot, seed=seed)
    if returning_users is not None:
        seen = np.isin(users, returning_users)
        for name, rows in (("returning", seen), ("new", ~seen)):
            try:
                metrics[name] = evaluate(y[rows], p[rows], users[rows], n_boot=n_boot, seed=seed)
            except ValueError:  # too few rows or one class only
                continue
    return metrics


@dataclass
class _State:
    """Everything a resumed run needs beyond the model and optimizer."""

    epoch: int = 0  # current epoch
    step: int = 0  # batches done in the current epoch
    global_step: int = 0
    best_auc: float = -1.0
    best_epoch: int = -1
    best_valid: dict = field(default_factory=dict)
    bad_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    epoch_loss_sum: float = 0.0  # over the current epoch's batches done so far
    samples: int = 0
    train_seconds: float = 0.0
    finished: bool = False


def _fingerprint(model: nn.Module, cfg: TrainConfig) -> str:
    """What must match for a checkpoint to be resumed (epochs may grow; threads and progress do not matter; the
    world size does: it decides every rank's shard)."""
    keep = {k: v for k, v in asdict(cfg).items() if k not in ("epochs", "threads", "progress", "patience", "checkpoint_every")}
    fp = {"model": getattr(model, "config", {}), "kind": getattr(model, "kind", ""), "train": keep, "world": dist.world_size()}
    return json.dumps(fp, sort_keys=True, default=str)


def _rng_states() -> dict[str, Any]:
    # numpy's state as a tensor and plain numbers: a checkpoint then loads with torch.load(weights_only=True)
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "gauss": float(gauss)}
    return {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}


def _set_rng_states(s: dict[str, Any]) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    random.setstate(s["python"])


def _save_checkpoint(
    path: Path, model: nn.Module, opt: torch.optim.Optimizer, state: _State, best: dict | None, fp: str, rngs: list[dict[str, Any]]
) -> None:
    payload = {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "rng": rngs,  # one per rank
        "state": asdict(state),
        "best_model": best,
        "fingerprint": fp,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # atomic: a reader (or a resumed run) never sees half a checkpoint


def _load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer, fp: str) -> tuple[_State, dict | None]:
    try:  # tensors and plain values only: a planted pickle cannot run code here
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise ValueError(f"checkpoint {path} holds objects other than tensors and plain values, refused unread ({str(e).splitlines()[0]}); delete it to train afresh") from None
    if ck.get("fingerprint") != fp:
        raise ValueError(f"checkpoint {path} was written by a different model or training config; delete it or use another checkpoint_dir")
    model.load_state_dict(ck["model"])
    opt.load_state_dict(ck["optimizer"])
    _set_rng_states(ck["rng"][dist.rank()])
    return _State(**ck["state"]), ck["best_model"]


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """Adam; embedding tables and the other parameters in two groups when their decays differ."""
    if cfg.embedding_decay is None or cfg.embedding_decay == cfg.weight_decay:
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    tables = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) in tables], "weight_decay": cfg.embedding_decay},
        {"params": [p for p in params if id(p) not in tables], "weight_decay": cfg.weight_decay},
    ]
    return torch.optim.Adam([g for g in groups if g["params"]], lr=cfg.lr)


def train_step(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    batch: dict[str, torch.Tensor],
    grad_clip: float | None,
    loss_fn: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, dict[str, float]]] | None = None,
) -> dict[str, float]:
    """One optimizer step; ``loss_fn`` (default ``model.loss``): the DDP-wrapped loss under several processes."""
    opt.zero_grad(set_to_none=True)
    loss, logs = (loss_fn or model.loss)(batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss is {loss.item()} (logs: {logs}); lower the learning rate or check the inputs")
    loss.backward()
    if grad_clip is not None:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    opt.step()
    return {"loss": float(loss.detach()), **logs}


def fit(
    model: nn.Module,
    train_batches: BatchSource,
    valid_batches: BatchSource,
    cfg: TrainConfig,
    checkpoint_dir: str | Path | None = None,
    task: str = "click",
) -> TrainResult:
    """Train with Adam; after each epoch score valid AUC (of ``task``: click, or conversion on clicked rows); stop
    after ``patience`` epochs without improvement; end with the best epoch's weights loaded. Resumes from
    ``checkpoint_dir`` when it holds a checkpoint."""
    set_threads(cfg.threads)
    seed_everything(cfg.seed + dist.rank())  # rank 0 draws what a single process draws
    dev = dist.device()
    model.to(dev)
    opt = make_optimizer(model, cfg)
    fp = _fingerprint(model, cfg)
    ck_path: Path | None = None
    state, best = _State(), None
    if checkpoint_dir is not None:
        ck_dir = Path(checkpoint_dir)
        ck_dir.mkdir(parents=True, exist_ok=True)
        ck_path = ck_dir / CHECKPOINT_FILE
        if ck_path.is_file():
            state, best = _load_checkpoint(ck_path, model, opt, fp)
    loss = dist.loss_fn(model)
    progress = cfg.progress and dist.is_main()

    def checkpoint() -> None:
        if ck_path is not None:
            rngs = dist.gather_to_main(_rng_states())  # a collective: every rank checkpoints at the same steps
            if rngs is not None:
                _save_checkpoint(ck_path, model, opt, state, best, fp, rngs)

    while not state.finished and state.epoch < cfg.epochs:
        model.train()
        bar = tqdm(total=len(train_batches), initial=state.step, desc=f"{getattr(model, 'kind', 'model')} epoch {state.epoch}", disable=not progress, unit="batch")
        seconds_before, t0 = state.train_seconds, time.perf_counter()
        # The first state.step batches were done before the crash: the source replays the same batches, so skip them.
        for batch in dist.lockstep(itertools.islice(train_batches.batches(state.epoch), state.step, None)):
            logs = train_step(model, opt, dist.to_device(batch, dev), cfg.grad_clip, loss)
            state.epoch_loss_sum += logs["loss"]
            state.step, state.global_step = state.step + 1, state.global_step + 1
            state.samples += batch_samples(batch)
            state.train_seconds = seconds_before + time.perf_counter() - t0
            bar.update(1)
            bar.set_postfix(loss=f"{logs['loss']:.4f}", samples_s=f"{state.samples / max(state.train_seconds, 1e-9):,.0f}", refresh=False)
            if state.global_step % cfg.checkpoint_every == 0:
                checkpoint()
        bar.close()

        valid = evaluate_model(model, valid_batches, task=task)
        train_loss = dist.all_sum([state.epoch_loss_sum])[0] / (dist.world_size() * max(state.step, 1))
        record = {"epoch": state.epoch, "train_loss": train_loss, **{f"valid_{k}": v for k, v in valid.items()}}
        state.history.append(record)
        if valid["auc"] > state.best_auc:
            state.best_auc, state.best_epoch, state.best_valid, state.bad_epochs = valid["auc"], state.epoch, valid, 0
            best = copy.deepcopy(model.state_dict())
        else:
            state.bad_epochs += 1
        state.epoch, state.step, state.epoch_loss_sum = state.epoch + 1, 0, 0.0
        if cfg.patience and state.bad_epochs >= cfg.patience:
            state.finished = True
        if progress:
            tqdm.write(f"epoch {record['epoch']}: train loss {record['train_loss']:.4f}, valid auc {valid['auc']:.4f} gauc {valid['gauc']:.4f} logloss {valid['logloss']:.4f}")
        checkpoint()

    if best is not None:
        model.load_state_dict(best)
    model.eval()
    samples, seconds = dist.all_sum([state.samples])[0], dist.all_max([state.train_seconds])[0]
    return TrainResult(
        best_epoch=state.best_epoch,
        best_valid=state.best_valid,
        history=state.history,
        checkpoint_dir=ck_path.parent if ck_path is not None else None,
        samples_per_s=samples / max(seconds, 1e-9),  # all ranks' samples over the slowest rank's training time
    )
