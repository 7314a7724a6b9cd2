"""One training loop for every pipeline, on ``torch.distributed`` (API.md §6, issue 11 item 5).

Launch
    One process: ``facegeom train --method NAME ...`` (or :func:`train`). Several:
    ``torchrun --nproc_per_node N -m facegeom.cli train ...``. Under torchrun the
    loop initialises the process group from the environment (``gloo`` on CPU,
    ``nccl`` on CUDA; each rank uses ``cuda:LOCAL_RANK`` when CUDA is present).

Data and the global batch
    ``batch_size`` is the GLOBAL batch of one optimiser step. It must be divisible
    by ``world_size * accumulation``; each rank runs ``accumulation`` micro-batches
    of ``batch_size / (world_size * accumulation)`` samples. Rank ``r`` reads its
    shard with a :class:`~torch.utils.data.DistributedSampler` (shuffled per epoch
    from ``seed``), and the epochs are read as one endless stream, so step ``s``
    uses exactly the samples at positions ``[s * B, (s + 1) * B)`` of the
    one-process stream whatever the world size. Datasets that are deterministic
    per global index (as :class:`facegeom.data.synthetic.SyntheticFaces`) therefore
    give N processes exactly the data one process sees, provided the dataset length
    is divisible by the world size (otherwise the sampler pads its shards).

Gradients
    Every micro-batch loss is divided by ``accumulation`` and DDP averages over
    ranks, so the update equals one process's on the whole global batch (up to
    float rounding). *BatchNorm policy*: exact N-vs-1 equality holds for models
    without BatchNorm (the built-in ``landmarks`` method has none). With
    ``world_size > 1`` on CUDA, BatchNorm layers are converted to SyncBatchNorm
    (statistics over the per-step micro-batch of all ranks, which equals one
    process only when ``accumulation == 1``); on CPU (gloo) SyncBatchNorm is not
    available and BatchNorm keeps per-rank statistics (a warning says so).

Methods (the protocol every pipeline implements)
    A method is a class registered with :func:`register` (the pipelines
    ``deep3d``, ``ringnet``, ``mica``, ``tdasl``, ``specular`` register themselves
    when ``facegeom.pipelines.<name>`` is imported; :func:`get_method` imports it on
    first use). It provides:

    - ``Config``: a dataclass of the method's settings with a ``tiny()`` classmethod
      (small sizes, for tests and smoke runs);
    - ``build_model(config) -> nn.Module``;
    - ``optimizers(model, config) -> dict[str, Optimizer]``;
    - ``schedulers(optimizers, config, train_config) -> dict[str, LRScheduler]``
      (optional; default: :func:`lr_lambda` from the :class:`TrainConfig` for each);
    - ``dataset(config, data, split, seed) -> Dataset`` for ``split`` in
      ``"train"``/``"val"`` (``data`` is ``"synthetic"`` or a folder; ``None`` for
      no validation set); samples are dicts of tensors (default collate);
    - ``training_step(model, batch, optimizers) -> dict[str, Tensor]``;
    - ``validation_step(model, batch) -> dict[str, Tensor]`` (batch means);
    - class attributes ``val_metric = "loss"`` and ``val_mode = "min"`` (best checkpoint),
      and ``manual_optimization = False``.

    Automatic optimisation (default): ``training_step`` returns the losses with a
    ``"total"`` entry; the loop does the backward (scaled for AMP and accumulation,
    under DDP's ``no_sync`` except on the last micro-batch), then steps every
    optimiser. ``optimizers`` is given for reference only. Under torchrun the
    ``model`` it receives is the DDP wrapper: run the forward pass by calling it
    (DDP synchronises gradients only for forwards through the wrapper) and reach
    attributes through :func:`unwrap` (``validation_step`` gets the bare model).

    Manual optimisation (``manual_optimization = True``, e.g. 2DASL's SGD regressor
    and Adam critic): ``optimizers`` maps names to :class:`OptimizerHandle`; the step
    calls ``handle.backward(loss)``, which back-propagates (AMP-scaled, divided by
    ``accumulation``) into *that optimiser's parameters only*
    (``loss.backward(inputs=params)``, so a generator loss never leaks into the
    critic's gradients), and ``handle.step()``, which acts only on the last
    micro-batch: it averages that optimiser's gradients over the ranks (one
    all-reduce, the DDP average, so gradients accumulate unsynchronised before it,
    as under ``no_sync``), unscales, clips, steps and zeroes them. In this mode the
    model is not wrapped in DDP (DDP allows one backward per forward); parameters
    are broadcast from rank 0 at the start. With ``accumulation > 1`` a step takes
    effect after the last micro-batch's ``training_step`` call reaches it: to stay
    equivalent to one large batch, compute every loss before the first ``step()``
    (simultaneous updates); a method that must see the critic's new weights within
    the same iteration (strict alternation) should train with ``accumulation = 1``.

AMP (``amp=True``)
    Runs ``training_step`` under ``torch.autocast`` (float16 + GradScaler on CUDA,
    bfloat16 on CPU). Every facegeom custom op upcasts float16/bfloat16 inputs to
    float32 under autocast (docs/ops.md, "Autocast"); the loop checks
    ``facegeom.ops.SUPPORTS_AUTOCAST`` and raises a clear error for a build without it.

Checkpoints, resume, determinism
    Rank 0 writes ``out/step_NNNNNNNN.pt`` every ``checkpoint_every`` steps,
    ``out/best.pt`` at each validation improvement and ``out/final.pt`` (the model's
    plain ``state_dict``) at the end, each atomically (temporary file in the same
    folder, fsync, ``os.replace``): a crash leaves the previous file, never a
    truncated one. A checkpoint holds the model, optimisers, schedulers, GradScaler,
    the step, the best validation value and the configs. The RNG is re-seeded at
    every step from ``(seed, rank, step)``, so a run resumed from step ``s`` repeats
    the uninterrupted run bit for bit (same world size and settings).

Logs
    ``out/metrics.jsonl``: one JSON object per logged step (losses averaged over
    ranks and micro-batches, learning rates, seconds) and per validation; TensorBoard
    event files too when ``tensorboard`` is installed; a tqdm bar on rank 0.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import math
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

__all__ = ["TrainConfig", "TrainResult", "OptimizerHandle", "register", "get_method", "available_methods",
           "train", "unwrap", "lr_lambda", "save_checkpoint", "load_checkpoint", "load_model_weights", "CheckpointError"]

CHECKPOINT_FORMAT = "facegeom.train/1"
SCHEDULES = ("constant", "step", "exponential")
PIPELINES = ("deep3d", "ringnet", "mica", "tdasl", "specular")


# --------------------------------------------------------------------------- #
# Configuration                                                                #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TrainConfig:
    """Settings of the loop itself (the method's own settings are its ``Config``).

    Attributes:
        steps: optimiser steps in all (a resumed run continues up to it).
        batch_size: GLOBAL batch per optimiser step (all ranks, all micro-batches).
        accumulation: micro-batches per step on each rank.
        seed: seeds the initial weights, the sampler's shuffles and every step's RNG.
        out: output folder (metrics.jsonl, checkpoints, final.pt).
        schedule: ``"constant"``, ``"step"`` (x ``gamma`` every ``step_size`` steps)
            or ``"exponential"`` (x ``gamma`` per step); ``warmup_steps`` of linear
            warm-up first (see :func:`lr_lambda`). Applied as a factor on each
            optimiser's learning rate, unless the method defines ``schedulers``.
        grad_clip: max global gradient norm per optimiser (0: no clipping).
        amp: mixed precision (needs the ops' autocast policy, see the module doc).
        checkpoint_every: write ``step_N.pt`` every this many steps (0: only at the end).
        val_every: validate every this many steps and at the end (0: never).
        log_every: write a metrics line every this many steps (and the last).
        resume: a checkpoint path, ``"auto"`` (the newest ``step_*.pt`` in ``out``,
            if any) or None.
        num_workers: DataLoader worker processes per rank.
        device: ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
        progress: tqdm bar on rank 0.
    """

    steps: int = 1000
    batch_size: int = 8
    accumulation: int = 1
    seed: int = 0
    out: str = "train_out"
    schedule: str = "constant"
    warmup_steps: int = 0
    step_size: int = 1000
    gamma: float = 0.1
    grad_clip: float = 0.0
    amp: bool = False
    checkpoint_every: int = 0
    val_every: int = 0
    log_every: int = 1
    resume: Optional[str] = None
    num_workers: int = 0
    device: str = "auto"
    progress: bool = True

    def __post_init__(self):
        for name in ("steps", "batch_size", "accumulation", "step_size", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("warmup_steps", "checkpoint_every", "val_every", "num_workers", "seed"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not self.gamma > 0 or not self.grad_clip >= 0:
            raise ValueError(f"need gamma > 0 and grad_clip >= 0, got {self.gamma}, {self.grad_clip}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")


def lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    """The learning-rate factor after ``step`` optimiser steps (for ``LambdaLR``).

    Linear warm-up ``(step + 1) / warmup_steps`` for ``step < warmup_steps``, times
    ``gamma ** (step // step_size)`` (``"step"``, as ``StepLR``) or ``gamma ** step``
    (``"exponential"``, as ``ExponentialLR``) or 1 (``"constant"``).
    """
    schedule, warmup, step_size, gamma = config.schedule, config.warmup_steps, config.step_size, config.gamma

    def factor(step: int) -> float:
        f = (step + 1) / warmup if step < warmup else 1.0
        if schedule == "step":
            f *= gamma ** (step // step_size)
        elif schedule == "exponential":
            f *= gamma ** step
        return f

    return factor


# --------------------------------------------------------------------------- #
# Registry                                                                     #
# --------------------------------------------------------------------------- #
_METHODS: Dict[str, Any] = {}


def register(name: str, method=None):
    """Register a method class under ``name`` (usable as a decorator)."""

    def add(cls):
        if not isinstance(name, str) or not name:
            raise ValueError(f"method name must be a non-empty str, got {name!r}")
        missing = [a for a in ("Config", "build_model", "optimizers", "dataset", "training_step") if
                   not hasattr(cls, a)]
        if missing:
            raise TypeError(f"method {name!r} lacks {missing} (see facegeom.train's method protocol)")
        if not callable(getattr(cls.Config, "tiny", None)):
            raise TypeError(f"method {name!r}: its Config needs a tiny() classmethod")
        _METHODS[name] = cls
        return cls

    return add(method) if method is not None else add


def available_methods() -> List[str]:
    """Registered method names plus the pipelines that register on import."""
    return sorted(set(_METHODS) | set(PIPELINES))


def get_method(name: str):
    """The method class registered as ``name``; imports ``facegeom.pipelines.<name>``
    for the pipelines, and ``"package.module:Class"`` imports any class."""
    if name in _METHODS:
        return _METHODS[name]
    if ":" in name:
        module, _, attr = name.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        return register(name, cls)
    if name in PIPELINES:
        try:
            importlib.import_module(f"facegeom.pipelines.{name}")
        except ModuleNotFoundError as exc:
            raise ValueError(f"method {name!r}: facegeom.pipelines.{name} is not available ({exc})") from None
        if name in _METHODS:
            return _METHODS[name]
    raise ValueError(f"unknown method {name!r}; available: {', '.join(available_methods())}")


# --------------------------------------------------------------------------- #
# Checkpoints                                                                  #
# --------------------------------------------------------------------------- #
class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not match the model."""


def _atomic_save(obj, path: str) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync, then ``os.replace``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def _read(path: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle, ...
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated and cannot be read "
                              f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None


def _check_keys(path: str, what: str, expected: Dict[str, Any], found: Dict[str, Any]) -> None:
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    shapes = [f"{k}: file {tuple(found[k].shape)} vs model {tuple(expected[k].shape)}" for k in expected
              if k in found and isinstance(found[k], torch.Tensor) and isinstance(expected[k], torch.Tensor)
              and found[k].shape != expected[k].shape]
    if missing or unexpected or shapes:

        def show(items):
            return ", ".join(items[:10]) + (f" (+{len(items) - 10} more)" if len(items) > 10 else "")

        parts = ([f"missing keys: {show(missing)}"] if missing else []) + \
                ([f"unexpected keys: {show(unexpected)}"] if unexpected else []) + \
                ([f"shape mismatches: {show(shapes)}"] if shapes else [])
        raise CheckpointError(f"checkpoint {path} does not match the {what}: " + "; ".join(parts))


def load_model_weights(model: nn.Module, path: str) -> Dict[str, Any]:
    """Load ``path`` (a ``final.pt`` state dict or a training checkpoint) into ``model``
    strictly; errors name the file and the missing / unexpected / mis-shaped keys.
    Returns what was read."""
    blob = _read(path)
    state = blob["model"] if isinstance(blob, dict) and blob.get("format") == CHECKPOINT_FORMAT else blob
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict")
    _check_keys(path, "model", model.state_dict(), state)
    model.load_state_dict(state)
    return blob


def save_checkpoint(path: str, model: nn.Module, optimizers: Dict[str, torch.optim.Optimizer],
                    schedulers: Dict[str, Any], scaler, step: int, extra: Optional[Dict[str, Any]] = None) -> None:
    """Write a training checkpoint atomically (see the module docstring)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "model": model.state_dict(),
        "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
        "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
        "scaler": scaler.state_dict() if scaler is not None else {},
    }
    state.update(extra or {})
    _atomic_save(state, path)


def load_checkpoint(path: str, model: nn.Module, optimizers: Dict[str, torch.optim.Optimizer],
                    schedulers: Dict[str, Any], scaler=None, method: Optional[str] = None) -> Dict[str, Any]:
    """Restore a :func:`save_checkpoint` file into the given objects (strict); returns it."""
    blob = _read(path)
    if not isinstance(blob, dict) or blob.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a facegeom.train checkpoint (no format "
                              f"{CHECKPOINT_FORMAT!r}); for model weights only use load_model_weights")
    if method is not None and blob.get("method") not in (None, method):
        raise CheckpointError(f"checkpoint {path} was written by method {blob.get('method')!r}, not {method!r}")
    _check_keys(path, "model", model.state_dict(), blob["model"])
    _check_keys(path, "optimizers", dict(optimizers), blob["optimizers"])
    _check_keys(path, "schedulers", dict(schedulers), blob["schedulers"])
    model.load_state_dict(blob["model"])
    for name, opt in optimizers.items():
        try:
            opt.load_state_dict(blob["optimizers"][name])
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"checkpoint {path}: optimizer {name!r} does not match ({exc})") from None
    for name, sched in schedulers.items():
        sched.load_state_dict(blob["schedulers"][name])
    if scaler is not None and blob.get("scaler"):
        scaler.load_state_dict(blob["scaler"])
    return blob


# --------------------------------------------------------------------------- #
# Distributed plumbing                                                         #
# --------------------------------------------------------------------------- #
@dataclass
class _Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self):
        if self.active:
            dist.barrier()


def _setup_distributed(device: str) -> _Dist:
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device='cuda' but no CUDA device is available")
    launched = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    state = _Dist()
    if launched:
        state.rank, state.world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        state.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if use_cuda:
        torch.cuda.set_device(state.local_rank)
        state.device = torch.device("cuda", state.local_rank)
    if launched and state.world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
        state.owns_group = True
    elif dist.is_initialized():
        state.rank, state.world = dist.get_rank(), dist.get_world_size()
    return state


def _step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1, np.uint64)[0] % (2 ** 63))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


class _StreamSampler(torch.utils.data.Sampler):
    """Rank ``rank``'s micro-batches of the endless stream of DistributedSampler epochs,
    starting ``start`` samples into it (for resuming)."""

    def __init__(self, dataset, world: int, rank: int, seed: int, micro: int, start: int):
        self.sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True,
                                                           seed=seed, drop_last=False)
        self.micro, self.start = micro, start

    def __iter__(self) -> Iterator[List[int]]:
        per_epoch = len(self.sampler)
        epoch, offset = divmod(self.start, per_epoch)
        batch: List[int] = []
        while True:
            self.sampler.set_epoch(epoch)
            for index in list(self.sampler)[offset:]:
                batch.append(index)
                if len(batch) == self.micro:
                    yield batch
                    batch = []
            epoch, offset = epoch + 1, 0

    def __len__(self):  # endless; DataLoader only needs it for len(loader)
        return 2 ** 62


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (``model`` itself otherwise)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _require_autocast() -> None:
    from facegeom import ops

    if not getattr(ops, "SUPPORTS_AUTOCAST", False):
        raise RuntimeError("amp=True needs the facegeom ops' autocast policy (every custom op upcast to "
                           "float32 under autocast, announced by facegeom.ops.SUPPORTS_AUTOCAST = True), "
                           "which this build lacks; train without --amp")


class OptimizerHandle:
    """What ``training_step`` receives per optimiser in manual optimisation.

    ``backward(loss)`` and ``step()``; ``optimizer`` is the wrapped optimiser.
    """

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, loop: "_Loop"):
        self.name, self.optimizer, self._loop = name, optimizer, loop
        self.params = [p for g in optimizer.param_groups for p in g["params"] if p.requires_grad]

    def backward(self, loss: torch.Tensor) -> None:
        """Back-propagate ``loss / accumulation`` (AMP-scaled) into this optimiser's parameters only."""
        scaled = self._loop.scale(loss / self._loop.config.accumulation)
        scaled.backward(inputs=self.params)

    def step(self) -> None:
        """On the last micro-batch: average gradients over ranks, unscale, clip, step, zero; else nothing."""
        if self._loop.last_micro:
            self._loop.sync_gradients(self.params)
            self._loop.apply(self.optimizer)


# --------------------------------------------------------------------------- #
# The loop                                                                     #
# --------------------------------------------------------------------------- #
@dataclass
class TrainResult:
    """What :func:`train` returns (on every rank)."""

    model: nn.Module
    step: int
    final_path: Optional[str]
    best: Optional[float]
    metrics_path: str


class _Loop:
    def __init__(self, method, config: TrainConfig, method_config, data: str, method_name: str):
        self.method, self.config, self.method_config, self.data = method, config, method_config, data
        self.method_name = method_name
        self.last_micro = True
        self.scaler = None

    # -- AMP / gradient helpers (also used by OptimizerHandle) --
    def scale(self, loss):
        return self.scaler.scale(loss) if self.scaler is not None else loss

    def sync_gradients(self, params):
        if not self.dist.active:
            return
        grads = []
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            grads.append(p.grad)
        flat = torch._utils._flatten_dense_tensors(grads)
        dist.all_reduce(flat)
        flat /= self.dist.world
        for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
            g.copy_(synced)

    def apply(self, optimizer):
        if self.config.grad_clip > 0:
            if self.scaler is not None:
                self.scaler.unscale_(optimizer)
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        if self.scaler is not None:
            self.scaler.step(optimizer)
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def run(self) -> TrainResult:
        cfg, method = self.config, self.method
        self.dist = d = _setup_distributed(cfg.device)
        try:
            return self._run(cfg, method, d)
        finally:
            if d.owns_group and dist.is_initialized():
                dist.destroy_process_group()

    def _run(self, cfg, method, d) -> TrainResult:
        per_step = d.world * cfg.accumulation
        if cfg.batch_size % per_step:
            raise ValueError(f"--batch-size {cfg.batch_size} (the global batch) must be divisible by world size "
                             f"{d.world} x accumulation steps {cfg.accumulation} = {per_step}")
        micro = cfg.batch_size // per_step
        if cfg.amp:
            _require_autocast()
        manual = bool(getattr(method, "manual_optimization", False))
        os.makedirs(cfg.out, exist_ok=True)

        _seed_everything(cfg.seed)
        model = method.build_model(self.method_config).to(d.device)
        if d.active and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
            if d.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                warnings.warn("BatchNorm under gloo (CPU) keeps per-rank statistics: N processes will not match "
                              "one process exactly (SyncBatchNorm needs CUDA)", stacklevel=2)
        optimizers = method.optimizers(model, self.method_config)
        if not isinstance(optimizers, dict) or not all(isinstance(o, torch.optim.Optimizer)
                                                       for o in optimizers.values()) or not optimizers:
            raise TypeError(f"method {self.method_name!r}: optimizers() must return a non-empty dict of "
                            f"torch.optim.Optimizer")
        schedulers = method.schedulers(optimizers, self.method_config, cfg) if hasattr(method, "schedulers") \
            else None
        if schedulers is None:
            schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, lr_lambda(cfg)) for k, o in optimizers.items()}
        amp_dtype = torch.float16 if d.device.type == "cuda" else torch.bfloat16
        self.scaler = torch.amp.GradScaler(d.device.type) if cfg.amp and amp_dtype == torch.float16 else None

        start, best, resumed = 0, None, None
        resume = cfg.resume
        if resume == "auto":
            found = sorted(f for f in os.listdir(cfg.out) if f.startswith("step_") and f.endswith(".pt"))
            resume = os.path.join(cfg.out, found[-1]) if found else None
        if resume:
            blob = load_checkpoint(resume, model, optimizers, schedulers, self.scaler, method=self.method_name)
            start, best, resumed = int(blob["step"]), blob.get("best"), resume
            if blob.get("world_size") not in (None, d.world) or blob.get("batch_size") not in (None, cfg.batch_size):
                warnings.warn(f"resuming {resume} (world size {blob.get('world_size')}, batch {blob.get('batch_size')})"
                              f" with world size {d.world}, batch {cfg.batch_size}: the data order differs from "
                              f"the original run", stacklevel=2)

        if d.active:  # every rank starts from rank 0's weights (DDP does this too)
            for tensor in list(model.parameters()) + list(model.buffers()):
                dist.broadcast(tensor.data, 0)
        net = model
        if d.active and not manual:
            net = nn.parallel.DistributedDataParallel(
                model, device_ids=[d.local_rank] if d.device.type == "cuda" else None)

        train_set = method.dataset(self.method_config, self.data, "train", cfg.seed)
        sampler = _StreamSampler(train_set, d.world, d.rank, cfg.seed, micro, start * cfg.accumulation * micro)
        loader = torch.utils.data.DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.num_workers,
                                             pin_memory=d.device.type == "cuda")
        val_set = method.dataset(self.method_config, self.data, "val", cfg.seed) if cfg.val_every else None

        logger = _Logger(cfg.out, d.rank == 0, append=resumed is not None)
        extra = lambda: {"method": self.method_name, "best": best, "world_size": d.world,  # noqa: E731
                         "batch_size": cfg.batch_size, "train_config": dataclasses.asdict(cfg),
                         "method_config": _plain(self.method_config)}
        val_metric, val_mode = getattr(method, "val_metric", "loss"), getattr(method, "val_mode", "min")
        handles = {k: OptimizerHandle(k, o, self) for k, o in optimizers.items()} if manual else None
        autocast = (lambda: torch.autocast(d.device.type, dtype=amp_dtype)) if cfg.amp else contextlib.nullcontext

        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and d.rank == 0), desc="train",
                   dynamic_ncols=True)
        batches = iter(loader)
        tic = time.perf_counter()
        for step in range(start, cfg.steps):
            step_seed = _step_seed(cfg.seed, d.rank, step)
            # Only the generators in use: torch.manual_seed also queues lazy seeds for
            # every accelerator type, with a stack trace each (milliseconds per step).
            torch.default_generator.manual_seed(step_seed)
            if d.device.type == "cuda":
                torch.cuda.manual_seed(step_seed)
            net.train()
            sums: Dict[str, torch.Tensor] = {}
            for j in range(cfg.accumulation):
                self.last_micro = j == cfg.accumulation - 1
                batch = _to_device(next(batches), d.device)
                sync = contextlib.nullcontext() if self.last_micro or net is model else net.no_sync()
                with sync:
                    with autocast():
                        losses = method.training_step(net, batch, handles if manual else optimizers)
                    if not manual:
                        if "total" not in losses:
                            raise KeyError(f"method {self.method_name!r}: training_step must return a 'total' loss")
                        self.scale(losses["total"] / cfg.accumulation).backward()
                for k, v in losses.items():
                    v = torch.as_tensor(v).detach().float().to(d.device)
                    sums[k] = sums.get(k, 0.0) + v / cfg.accumulation
            if not manual:
                for opt in optimizers.values():
                    self.apply(opt)
            if self.scaler is not None:
                self.scaler.update()
            lrs = {f"lr/{k}": o.param_groups[0]["lr"] for k, o in optimizers.items()}  # this step's rates
            for sched in schedulers.values():
                sched.step()
            done = step + 1
            bar.update(1)
            if done % cfg.log_every == 0 or done == cfg.steps:
                values = _mean_over_ranks(sums, d)
                record = {"step": done, **{f"loss/{k}": v for k, v in values.items()},
                          **lrs,
                          "seconds": round(time.perf_counter() - tic, 4)}
                logger.write(record)
                bar.set_postfix({k: f"{v:.4g}" for k, v in values.items() if k == "total"} or None)
            if cfg.val_every and val_set is not None and (done % cfg.val_every == 0 or done == cfg.steps):
                values = self._validate(model, val_set, micro, d)
                value = values.get(val_metric)
                improved = value is not None and (best is None or (value < best if val_mode == "min" else value > best))
                if improved:
                    best = value
                logger.write({"step": done, **{f"val/{k}": v for k, v in values.items()}, "best": bool(improved)})
                if improved and d.rank == 0:
                    save_checkpoint(os.path.join(cfg.out, "best.pt"), model, optimizers, schedulers, self.scaler,
                                    done, extra())
            if cfg.checkpoint_every and done % cfg.checkpoint_every == 0 and d.rank == 0:
                save_checkpoint(os.path.join(cfg.out, f"step_{done:08d}.pt"), model, optimizers, schedulers,
                                self.scaler, done, extra())
        bar.close()
        final = os.path.join(cfg.out, "final.pt")
        if d.rank == 0:
            _atomic_save(model.state_dict(), final)
        logger.close()
        d.barrier()
        return TrainResult(model, max(start, cfg.steps), final, best, logger.path)

    @torch.no_grad()
    def _validate(self, model, val_set, micro, d) -> Dict[str, float]:
        model.eval()
        if len(val_set) < d.world:
            raise ValueError(f"the validation set has {len(val_set)} samples, fewer than the {d.world} processes")
        indices = list(range(d.rank, len(val_set), d.world))  # no padding: each sample once
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(val_set, indices), batch_size=micro,
                                             num_workers=self.config.num_workers)
        sums: Dict[str, torch.Tensor] = {}
        count = torch.zeros((), dtype=torch.float64, device=d.device)
        for batch in loader:
            batch = _to_device(batch, d.device)
            n = len(next(iter(batch.values()))) if isinstance(batch, dict) else len(batch[0])
            for k, v in self.method.validation_step(model, batch).items():
                sums[k] = sums.get(k, 0.0) + torch.as_tensor(v).detach().double().to(d.device) * n
            count += n
        keys = sorted(sums)
        if d.active:  # every rank must agree on the keys (each validates at least one batch)
            stacked = torch.stack([sums[k] for k in keys] + [count])
            dist.all_reduce(stacked)
            values, count = stacked[:-1], stacked[-1]
        else:
            values = torch.stack([sums[k] for k in keys]) if keys else torch.zeros(0)
        return {k: float(v / count) for k, v in zip(keys, values)}


def _mean_over_ranks(sums: Dict[str, torch.Tensor], d: _Dist) -> Dict[str, float]:
    keys = sorted(sums)
    if not keys:
        return {}
    stacked = torch.stack([torch.as_tensor(sums[k]).float() for k in keys])
    if d.active:
        dist.all_reduce(stacked)
        stacked /= d.world
    return {k: float(v) for k, v in zip(keys, stacked)}


def _plain(config) -> Any:
    if dataclasses.is_dataclass(config):
        return {k: _plain(v) for k, v in dataclasses.asdict(config).items()}
    if isinstance(config, (list, tuple)):
        return [_plain(v) for v in config]
    return config if isinstance(config, (int, float, str, bool, type(None), dict)) else repr(config)


class _Logger:
    """metrics.jsonl (rank 0) and TensorBoard when installed."""

    def __init__(self, out: str, active: bool, append: bool):
        self.path = os.path.join(out, "metrics.jsonl")
        self.active = active
        self.file = open(self.path, "a" if append else "w") if active else None
        self.tb = None
        if active:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # tensorboard not installed
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(os.path.join(out, "tensorboard"))

    def write(self, record: Dict[str, Any]) -> None:
        if not self.active:
            return
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    self.tb.add_scalar(k, v, record["step"])

    def close(self):
        if self.file is not None:
            self.file.close()
        if self.tb is not None:
            self.tb.close()


def train(method, config: TrainConfig, method_config=None, data: str = "synthetic") -> TrainResult:
    """Train ``method`` (a registered name, ``"module:Class"``, or a method class/instance).

    Args:
        method: see :func:`get_method`.
        config: the loop's :class:`TrainConfig`.
        method_config: the method's ``Config`` instance (default: ``Config()``).
        data: ``"synthetic"`` or a dataset folder, passed to the method's ``dataset``.

    Returns:
        :class:`TrainResult`. Run under torchrun, every rank calls it.

    Example:
        >>> from facegeom import train as training
        >>> method = training.get_method("landmarks")
        >>> config = training.TrainConfig(steps=2, batch_size=4, out="run", progress=False)
        >>> result = training.train("landmarks", config, method.Config.tiny())
        >>> sorted(os.listdir("run"))
        ['final.pt', 'metrics.jsonl']
    """
    name = method if isinstance(method, str) else getattr(method, "name", type(method).__name__)
    cls = get_method(method) if isinstance(method, str) else method
    instance = cls() if isinstance(cls, type) else cls
    if method_config is None:
        method_config = instance.Config()
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    return _Loop(instance, config, method_config, data, name).run()


# --------------------------------------------------------------------------- #
# The built-in minimal method                                                  #
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class LandmarksConfig:
    """The ``landmarks`` method: a small conv regressor (no BatchNorm) of the 68
    landmarks from a synthetic image (proves the loop until the pipelines land)."""

    image_size: int = 64
    width: int = 16  # channels of the first conv; doubled twice
    lr: float = 1e-3
    num_samples: int = 1024  # synthetic training samples
    val_samples: int = 64
    images_per_identity: int = 4

    @classmethod
    def tiny(cls) -> "LandmarksConfig":
        return cls(image_size=32, width=4, num_samples=64, val_samples=8)


class LandmarkRegressor(nn.Module):
    """Conv(s2)-ReLU x3, 4x4 average pool, linear: ``[B, 3, H, W]`` -> ``[B, 68, 2]``
    landmarks in normalised coordinates ``(p + 0.5) / size * 2 - 1``."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 3, 2, 1), nn.ReLU(), nn.Conv2d(w, 2 * w, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(4))
        self.head = nn.Linear(4 * w * 16, 136)

    def forward(self, image):
        return self.head(self.features(image).flatten(1)).view(-1, 68, 2)


@register("landmarks")
class LandmarksMethod:
    """Minimal method: MSE between predicted and true normalised landmarks."""

    name = "landmarks"
    Config = LandmarksConfig
    val_metric, val_mode = "loss", "min"
    manual_optimization = False

    def build_model(self, config):
        return LandmarkRegressor(config.width)

    def optimizers(self, model, config):
        return {"adam": torch.optim.Adam(model.parameters(), lr=config.lr)}

    def dataset(self, config, data, split, seed):
        if data != "synthetic":
            raise ValueError(f"--data {data!r}: the landmarks method reads only 'synthetic' until "
                             f"facegeom.data's folder readers are merged (issue 11 item 4)")
        from facegeom.data.synthetic import SyntheticFaces

        count = config.num_samples if split == "train" else config.val_samples
        # The validation split uses a different generator seed: disjoint samples.
        return SyntheticFaces(num_samples=count, image_size=config.image_size, seed=seed if split == "train"
                              else seed + 1_000_003, images_per_identity=config.images_per_identity, mask=None)

    @staticmethod
    def _loss(model, batch):
        image = batch["image"]
        size = image.new_tensor([image.shape[-1], image.shape[-2]])
        target = (batch["landmarks"] + 0.5) / size * 2 - 1
        return nn.functional.mse_loss(model(image).float(), target)

    def training_step(self, model, batch, optimizers):
        return {"total": self._loss(model, batch)}

    def validation_step(self, model, batch):
        return {"loss": self._loss(model, batch)}
