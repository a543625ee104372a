"""The one training loop, shared by every method: single process (CPU or GPU) or DistributedDataParallel under
``torchrun``, AMP on CUDA, atomic checkpoints every epoch and resuming that repeats an interrupted epoch exactly.

Reproducibility: the model is initialised from ``SEED``; the order of the training set in epoch ``e`` is a
permutation seeded by ``(SEED, e)`` and every sample's augmentation by ``(SEED, e, index)``. A global batch is the
same set of samples whatever the number of processes (each process takes its share of it), and the losses are
normalised over the global batch, so a run on N processes follows the same path as one process with N times the
batch (up to batch-norm statistics, which are per process unless ``TRAIN.SYNC_BN``).

No silent corruption: the output folder must be writable when the Trainer is built (a ConfigError otherwise, before
any training), and temporary files of saves killed in earlier runs are removed then. A non-finite loss stops the run
before its optimiser step; at the end of each epoch, before anything is saved, the state is checked, and a diverged
state stops the run without overwriting the last good checkpoint (:meth:`Trainer.divergence`: NaN / infinite values
in the weights, buffers, EMA or optimizer state, or a weight above :data:`EXPLODED_WEIGHT` in absolute value).
"""
from __future__ import annotations

import copy
import csv
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from tqdm import tqdm

from bupose.config import Config, save_config
from bupose.engine.checkpoint import (ensure_writable_folder, non_finite_entries, read_checkpoint,
                                     remove_stale_temporaries, save_checkpoint, shorten_keys, unwrap_checkpoint,
                                     unwrap_state_dict)
from bupose.engine.optim import ModelEMA, Schedule, build_optimizer, learning_rate  # noqa: F401 (re-exported)
from bupose.inference.predictor import resolve_device
from bupose.methods import build_method

log = logging.getLogger("bupose")

# A parameter (of the model or its EMA) above this in absolute value marks a diverged run whose state is not saved.
# Trained pose networks keep their weights orders of magnitude below it (BN statistics, buffers, are not judged by it).
EXPLODED_WEIGHT = 1e6


def default_output_dir(cfg: Config) -> Path:
    name = Path(cfg.source).stem if cfg.source else "run"
    return Path(cfg.OUTPUT_DIR) / cfg.DATASET.DATASET / name


class GlobalBatchSampler(torch.utils.data.Sampler):
    """This process's share of global batches of ``batch_size * world_size`` indices.

    The order is a permutation seeded by ``(seed, epoch)`` (or the identity without shuffling); global batch ``b``
    is ``order[b * B : (b + 1) * B]`` and process ``rank`` takes its ``rank``-th slice. Incomplete last batches are
    dropped.
    """

    def __init__(self, length: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0,
                 shuffle: bool = True):
        self.length, self.batch_size, self.world_size, self.rank = length, batch_size, world_size, rank
        self.seed, self.shuffle, self.epoch = seed, shuffle, 0
        if length < batch_size * world_size:
            from bupose.errors import ConfigError

            raise ConfigError(f"the training set has {length} images, fewer than one global batch of "
                              f"{batch_size} (TRAIN.IMAGES_PER_GPU) x {world_size} processes")

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
            order = torch.randperm(self.length, generator=g).tolist()
        else:
            order = list(range(self.length))
        total = self.batch_size * self.world_size
        for b in range(len(self)):
            start = b * total + self.rank * self.batch_size
            yield order[start:start + self.batch_size]


def load_pretrained(model: torch.nn.Module, path: str | os.PathLike, layers=("*",)) -> int:
    """``MODEL.PRETRAINED``: initialise ``model`` from the weights in ``path`` (e.g. HRNet ImageNet weights), as the
    official code: every entry whose name is in the model (and whose first name part is in ``layers``, unless
    ``layers`` is ``["*"]``) is copied; the rest of the file (a classifier, ...) is ignored. When no name fits as it
    is, the names are tried under each child module (``base.`` + name: the ImageNet DLA-34 file for the DLA
    models) and the child that takes the most entries wins. Returns how many
    entries were loaded; raises CheckpointError when none fits or a shape differs."""
    from bupose.errors import CheckpointError

    raw = read_checkpoint(path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"MODEL.PRETRAINED {path}: expected a dict of tensors, got {type(raw).__name__}")
    raw = unwrap_checkpoint(raw)
    layers = list(layers or ["*"])
    ours = model.state_dict()

    def matching(prefix: str) -> dict:
        return {prefix + k: v for k, v in raw.items() if prefix + k in ours and isinstance(v, torch.Tensor)
                and (layers[0] == "*" or (prefix + k).split(".")[0] in layers)}

    use = matching("")
    if not use:  # backbone weights saved on their own (ImageNet DLA-34) for a model that holds them in a child
        use = max((matching(name + ".") for name, _ in model.named_children()), key=len, default={})
    if not use:
        raise CheckpointError(f"MODEL.PRETRAINED {path}: none of its {len(raw)} entries is a parameter of the model "
                              f"(its keys start: {sorted(raw)[:5]})")
    bad = [f"{k}: file {tuple(v.shape)}, model {tuple(ours[k].shape)}" for k, v in use.items()
           if v.shape != ours[k].shape]
    if bad:
        raise CheckpointError(f"MODEL.PRETRAINED {path}: {len(bad)} shapes differ from the model: "
                              + "; ".join(bad[:5]))
    bad = non_finite_entries(use)
    if bad:
        raise CheckpointError(f"MODEL.PRETRAINED {path}: {len(bad)} of its tensors hold NaN or infinite values "
                              f"({shorten_keys(bad)}): the file is damaged")
    model.load_state_dict(use, strict=False)
    log.info("MODEL.PRETRAINED: %d of the model's %d entries loaded from %s", len(use), len(ours), path)
    return len(use)


class Trainer:
    """Train ``cfg``'s method; ``Trainer(cfg).train()`` returns the history (one dict per epoch).

    Args:
        cfg: the resolved config.
        output_dir: where checkpoints, ``config.yaml``, ``metrics.csv`` and results go (default
            ``OUTPUT_DIR/<dataset>/<config name>``).
        resume: continue from ``output_dir/checkpoint.pth`` (or from this file when a path); by default (None) when
            ``TRAIN.AUTO_RESUME`` is set and a checkpoint exists; False: start afresh.
        on_iteration: called as ``on_iteration(epoch, iteration)`` after each optimiser step (hooks, tests).
        progress: show tqdm bars (process 0 only).
    """

    def __init__(self, cfg: Config, output_dir: str | os.PathLike | None = None,
                 resume: bool | str | os.PathLike | None = None,
                 on_iteration: Callable[[int, int], None] | None = None, progress: bool = True):
        self.cfg = cfg
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.distributed = self.world_size > 1
        device = resolve_device(cfg.DEVICE)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        self.rank = dist.get_rank() if self.distributed else 0
        if device.type == "cuda" and self.distributed:
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        self.device = device
        self.output_dir = Path(output_dir) if output_dir else default_output_dir(cfg)
        self.on_iteration = on_iteration
        self.progress = progress and self.rank == 0
        if self.rank == 0:
            self._prepare_output_dir()

        torch.manual_seed(cfg.SEED)
        self.method = build_method(cfg)
        model = self.method.build_model().to(device)
        if self.distributed and cfg.TRAIN.SYNC_BN and device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        if cfg.MODEL.PRETRAINED:  # a method's own loader (e.g. backbone-only ImageNet weights) where it has one
            if hasattr(self.method, "load_pretrained"):
                self.method.load_pretrained(model, cfg.MODEL.PRETRAINED)
            else:
                load_pretrained(model, cfg.MODEL.PRETRAINED, cfg.MODEL.SPEC.get("PRETRAINED_LAYERS", ["*"]))
        self.model = model
        self.ddp = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda"
                                                              else None) if self.distributed else model)
        self.loss_fn = self.method.loss_module()
        global_batch = cfg.TRAIN.IMAGES_PER_GPU * self.world_size
        self.optimizer = build_optimizer(cfg, model, global_batch)
        self.ema = ModelEMA(model, cfg.TRAIN.EMA_DECAY, cfg.TRAIN.EMA_TAU) if cfg.TRAIN.EMA else None
        self.amp = cfg.TRAIN.AMP and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        if self.distributed and self.rank != 0:
            dist.barrier()  # rank 0 first: it may generate the synthetic dataset, which must happen once
        self.dataset = self.method.train_dataset()
        if self.distributed and self.rank == 0:
            dist.barrier()
        self.sampler = GlobalBatchSampler(len(self.dataset), cfg.TRAIN.IMAGES_PER_GPU, self.world_size, self.rank,
                                          cfg.SEED, cfg.TRAIN.SHUFFLE)
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=self.sampler,
                                                  num_workers=cfg.WORKERS, pin_memory=device.type == "cuda",
                                                  persistent_workers=False,
                                                  collate_fn=getattr(self.dataset, "collate", None))
        self.schedule = Schedule(cfg, len(self.sampler), global_batch)
        self.start_epoch, self.best, self.history = cfg.TRAIN.BEGIN_EPOCH, -math.inf, []
        self.last_checkpoint: tuple[Path, int] | None = None  # (file, epoch) this run last wrote or resumed from
        ckpt = self.output_dir / "checkpoint.pth"
        if isinstance(resume, (str, os.PathLike)):
            self._resume(Path(resume))
        elif resume or (resume is None and cfg.TRAIN.AUTO_RESUME and ckpt.is_file()):
            self._resume(ckpt)

    def _prepare_output_dir(self) -> None:
        """Fail now, not after an epoch, when the output folder cannot be written; remove the temporary files of
        checkpoint saves that were killed in earlier runs."""
        ensure_writable_folder(self.output_dir, "output folder")
        for path in remove_stale_temporaries(self.output_dir):
            log.info("removed %s, left by a checkpoint save that was killed", path)

    # -- checkpoints --------------------------------------------------------------------------------------------
    def _state(self, epoch: int) -> dict:
        state = {"model": unwrap_state_dict(self.ddp), "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict(), "epoch": epoch, "best_metric": self.best,
                 "history": self.history, "method": self.method.name, "config": self.cfg.to_dict()}
        if self.ema is not None:
            state["ema"] = self.ema.state_dict()
        return state

    def _inference_state(self, epoch: int, **extra) -> dict:
        """What model_best.pth / final_state.pth hold: the weights to test (the EMA when training keeps one)."""
        weights = self.ema.module.state_dict() if self.ema is not None else unwrap_state_dict(self.ddp)
        return {"model": weights, "method": self.method.name, "epoch": epoch, **extra}

    def _resume(self, path: Path) -> None:
        state = read_checkpoint(path)
        from bupose.engine.checkpoint import load_checkpoint
        from bupose.errors import CheckpointError

        fields = ("model", "optimizer", "epoch", "best_metric")
        missing = [k for k in fields if k not in state] if isinstance(state, dict) else list(fields)
        if missing:
            raise CheckpointError(f"{path} is not a bupose training checkpoint (it lacks {missing}); resume needs "
                                  f"a checkpoint.pth written by the trainer (weights alone: MODEL.PRETRAINED)")
        try:
            load_checkpoint(self.model, state)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume from {path}: {e}") from None
        bad = non_finite_entries({"optimizer": state["optimizer"], "ema": state.get("ema")})
        if bad:
            raise CheckpointError(f"cannot resume from {path}: {len(bad)} tensors of its optimizer / EMA state hold "
                                  f"NaN or infinite values ({shorten_keys(bad)}): it was saved from a diverged run")
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None:
            if state.get("ema"):
                self.ema.load_state_dict(state["ema"])
            else:  # a checkpoint from a run without EMA: start the average from the resumed weights
                self.ema = ModelEMA(self.model, self.cfg.TRAIN.EMA_DECAY, self.cfg.TRAIN.EMA_TAU)
        self.start_epoch, self.best = state["epoch"], state["best_metric"]
        self.history = list(state.get("history", []))
        self.last_checkpoint = (path, self.start_epoch)
        if self.rank == 0:
            log.info("resumed from %s at epoch %d", path, self.start_epoch)

    # -- one epoch ----------------------------------------------------------------------------------------------
    def _all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.distributed:
            x = x.clone()
            dist.all_reduce(x)
        return x

    def train_epoch(self, epoch: int) -> dict[str, float]:
        self.dataset.set_epoch(epoch)
        self.sampler.set_epoch(epoch)
        self.ddp.train()
        sums: dict[str, float] = {}
        n = 0
        t0 = time.perf_counter()
        lr = self.schedule.apply(self.optimizer, epoch, 0)
        bar = tqdm(self.loader, desc=f"epoch {epoch + 1}/{self.cfg.TRAIN.END_EPOCH}", disable=not self.progress,
                   leave=False)
        pending = 0  # iterations whose gradients wait for an optimiser step
        for it, batch in enumerate(bar):
            lr = self.schedule.apply(self.optimizer, epoch, it)
            batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
                outputs = self.ddp(batch["image"])
            outputs = _float(outputs)
            losses = self.loss_fn(outputs, batch, world_size=self.world_size, all_reduce=self._all_reduce_sum)
            loss = losses["loss"]
            bad = (~torch.isfinite(loss.detach())).float()
            if self.distributed:
                bad = self._all_reduce_sum(bad)
            if bad.item() > 0:
                self._non_finite(epoch, it, losses)
            if pending == 0:  # zeroed here, not after the step, so hooks can read the step's gradients
                self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            pending += 1
            if pending >= self.schedule.accumulation(epoch, it) or it + 1 == len(self.loader):
                self._step()
                pending = 0
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            n += 1
            bar.set_postfix(loss=f"{sums['loss'] / n:.4g}")
            if self.on_iteration is not None:
                self.on_iteration(epoch, it)
        row = {"epoch": epoch + 1, "lr": lr, **{k: v / max(n, 1) for k, v in sums.items()},
               "time_s": time.perf_counter() - t0}
        return row

    def _step(self) -> None:
        """One optimiser step on the accumulated gradients (clipped when TRAIN.CLIP_GRAD), then the EMA."""
        if self.cfg.TRAIN.CLIP_GRAD > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.TRAIN.CLIP_GRAD)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)

    def _non_finite(self, epoch: int, it: int, losses: dict[str, torch.Tensor]):
        if torch.isfinite(losses["loss"]):
            terms = " in another process"
        else:
            terms = " (" + ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items()) + ")"
        raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, iteration {it + 1}{terms}; stopping. "
                                 f"{self._kept_checkpoint()}")

    def _kept_checkpoint(self) -> str:
        """Which checkpoint a stopped run leaves, and what to do next."""
        ckpt = self.output_dir / "checkpoint.pth"
        if self.last_checkpoint is not None:
            path, done = self.last_checkpoint
            return (f"The last checkpoint {path} (after epoch {done}) is intact: lower TRAIN.LR or set "
                    f"TRAIN.CLIP_GRAD and resume")
        if ckpt.is_file():
            return f"This run wrote no checkpoint yet; {ckpt} is untouched (from an earlier run)"
        return (f"No checkpoint was written yet (none in {self.output_dir}): lower TRAIN.LR or set TRAIN.CLIP_GRAD "
                f"and start again")

    def divergence(self) -> str | None:
        """Why the current training state must not be saved, or None when it may: NaN / infinite values in the
        model's parameters or buffers, the EMA or the optimizer state, or a parameter of the model or the EMA above
        :data:`EXPLODED_WEIGHT` in absolute value (a finite loss can still give a step that explodes the weights)."""
        model = getattr(self.ddp, "module", self.ddp)
        parts = {"model": model.state_dict(), "optimizer state": self.optimizer.state_dict()["state"]}
        modules = {"model": model}
        if self.ema is not None:
            parts["EMA"] = self.ema.module.state_dict()
            modules["EMA"] = self.ema.module
        for name, tree in parts.items():
            bad = non_finite_entries(tree)
            if bad:
                return f"the {name} holds NaN or infinite values ({shorten_keys(bad, 5)})"
        for name, module in modules.items():
            peaks = {k: float(p.detach().abs().max()) for k, p in module.named_parameters() if p.numel()}
            huge = {k: v for k, v in peaks.items() if v > EXPLODED_WEIGHT}
            if huge:
                tensors = f"{len(huge)} parameter tensor{'s' if len(huge) > 1 else ''}"
                return (f"the {name}'s weights exploded: {tensors} with values above {EXPLODED_WEIGHT:g} in absolute "
                        f"value (largest {max(huge.values()):.3g}; {shorten_keys(huge, 5)})")
        return None

    def _check_before_saving(self, epoch: int) -> None:
        """FloatingPointError, before anything of epoch ``epoch`` is saved, when the state diverged."""
        problem = self.divergence()
        if problem is not None:
            raise FloatingPointError(f"training diverged in epoch {epoch + 1}: after it, {problem}; stopping without "
                                     f"saving this state. {self._kept_checkpoint()}")

    # -- the run ------------------------------------------------------------------------------------------------
    def validate(self, epoch: int) -> dict[str, float]:
        from bupose.engine.evaluate import evaluate_split

        cfg = self.cfg
        if not cfg.TRAIN.VAL_TTA:  # the quick check: one plain pass per image
            cfg = copy.deepcopy(cfg)
            cfg.TEST.SCALE_FACTOR, cfg.TEST.FLIP_TEST = [1.0], False
        out = self.output_dir / "results" / f"{cfg.DATASET.TEST_SET}_epoch{epoch + 1}.json"
        model = self.ema.module if self.ema is not None else self.model
        return evaluate_split(cfg, model, cfg.DATASET.TEST_SET, out, progress=self.progress,
                              limit=cfg.TRAIN.VAL_IMAGES or cfg.DATASET.MAX_TEST_IMAGES)

    def train(self) -> list[dict]:
        cfg = self.cfg
        if self.rank == 0:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.output_dir / "config.yaml")
        writer = _tensorboard(self.output_dir) if self.rank == 0 else None
        epoch_seconds = []  # the epochs timed in this process (not those of a run this one resumed)
        for epoch in range(self.start_epoch, cfg.TRAIN.END_EPOCH):
            t0 = time.perf_counter()
            row = self.train_epoch(epoch)
            self._check_before_saving(epoch)  # every process: their states are equal, so all stop together
            last = epoch + 1 == cfg.TRAIN.END_EPOCH
            if self.rank == 0 and cfg.TRAIN.VAL_FREQ > 0 and ((epoch + 1) % cfg.TRAIN.VAL_FREQ == 0 or last):
                metrics = self.validate(epoch)
                row.update(metrics)
                if metrics["AP"] > self.best:
                    self.best = metrics["AP"]
                    save_checkpoint(self._inference_state(epoch + 1, AP=self.best),
                                    self.output_dir / "model_best.pth")
            self.history.append(row)
            if self.rank == 0:
                save_checkpoint(self._state(epoch + 1), self.output_dir / "checkpoint.pth")
                _append_csv(self.output_dir / "metrics.csv", row)
                if writer is not None:
                    for k, v in row.items():
                        if k != "epoch":
                            writer.add_scalar(k, v, epoch + 1)
                epoch_seconds.append(time.perf_counter() - t0)
                log.info("epoch %d/%d: %s%s", epoch + 1, cfg.TRAIN.END_EPOCH,
                         ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"),
                         _eta(epoch_seconds, cfg.TRAIN.END_EPOCH - epoch - 1))
            if self.distributed:
                dist.barrier()
            self.last_checkpoint = (self.output_dir / "checkpoint.pth", epoch + 1)
        if self.rank == 0:
            save_checkpoint(self._inference_state(cfg.TRAIN.END_EPOCH), self.output_dir / "final_state.pth")
            if writer is not None:
                writer.close()
        return self.history


def _float(outputs):
    """Model outputs (tensors, or dicts / lists of them) in float32, e.g. after autocast."""
    if isinstance(outputs, torch.Tensor):
        return outputs.float()
    if isinstance(outputs, dict):
        return {k: _float(v) for k, v in outputs.items()}
    if isinstance(outputs, (list, tuple)):
        return type(outputs)(_float(v) for v in outputs)
    return outputs


def _append_csv(path: Path, row: dict) -> None:
    rows = []
    if path.is_file():
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    rows = [r for r in rows if int(r["epoch"]) < row["epoch"]]  # a resumed run rewrites the epochs it repeats
    rows.append({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    fields = list(dict.fromkeys(k for r in rows for k in r))
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)


def _eta(epoch_seconds: list[float], epochs_left: int) -> str:
    """``"; ETA h:mm:ss for N more epochs"``: the mean of ``epoch_seconds`` (training, validation, saving) times
    ``epochs_left``; empty after the last epoch."""
    if epochs_left <= 0 or not epoch_seconds:
        return ""
    seconds = round(sum(epoch_seconds) / len(epoch_seconds) * epochs_left)
    return f"; ETA {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d} for {epochs_left} more " \
           f"epoch{'s' if epochs_left > 1 else ''}"


def _tensorboard(output_dir: Path):
    """A SummaryWriter on ``output_dir/tensorboard``, or None (said once in the log) without the tensorboard
    package: the numbers are in ``metrics.csv`` either way."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("TensorBoard logging is off (no tensorboard package; `pip install tensorboard` for curves in %s); "
                 "metrics.csv has every epoch's numbers", output_dir / "tensorboard")
        return None
    return SummaryWriter(str(output_dir / "tensorboard"))
