"""The pretraining loop, in one place (in the style of the FAIR reference scripts).

Per step: draw two SSL views and, for every predicted group, the orbit of a small crop (all on the training
device, per-sample random), run :class:`ESSLModel` under autocast, step the optimiser with the precomputed lr.
Per epoch: a JSON line in ``metrics.jsonl``, the kNN monitor every ``knn_every`` epochs, and an atomically
written ``checkpoint.pt`` from which ``--resume`` continues exactly. With ``logger=tensorboard|wandb`` the means of
every ``log_every`` steps and each epoch's line also go to the logger (:mod:`essl.training.loggers`); ``run.json``
records where the run came from (:mod:`essl.training.provenance`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
from datetime import datetime
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from essl.augmentation import Normalize, build_view, resolve_view
from essl.augmentation.crops import PaddedImages
from essl.data import ImageData, as_image_data
from essl.data.batches import TensorBatches
from essl.data.sources import training_data
from essl.errors import EsslError, Interrupted, Preempted, interrupts_deferred, os_failure, write_error
from essl.training import provenance
from essl.training.loggers import Logger, check_logger, make_logger
from essl.groups import make_group
from essl.models import feature_dim
from essl.models.layouts import init_from_weights, split_layout
from essl.runs import (
    CHECKPOINT,
    METRICS,
    RUN_FILES,
    append_change,
    check_run_dir,
    claim_folder,
    default_run_dir,
    hold_lock,
    keep_milestone,
    load_checkpoint,
    load_safetensors,
    milestone_path,
    read_metrics,
    read_run_record,
    remove_temporaries,
    save_checkpoint,
    write_config,
    write_metrics,
    write_run_record,
)
from essl.runtime import (
    DEFAULT_THREADS,
    ThreadTuner,
    autocast_context,
    to_channels_last,
    precision_name,
    resolve_channels_last,
    malloc_setting,
    retain_freed_memory,
    resolve_device,
    resolve_precision,
)
from essl.training.checkpoint import (
    check_model_state,
    check_optimizer_state,
    checkpoint_config,
    rng_state,
    set_rng_state,
)
from essl.training.config import PretrainConfig, config_from_dict, nonfinite_settings, resume_changes
from essl.training.distributed import (
    DistEnv,
    all_gather_objects,
    all_reduce_mean,
    any_rank,
    barrier,
    check_same_on_all_ranks,
    cuda_index,
    detect_env,
    init_distributed,
)
from essl.training.model import ESSLModel
from essl.training.monitor import KnnMonitor
from essl.training.online_probe import OnlineProbe, epoch_labels
from essl.training.optim import build_optimizer
from essl.training.preemption import sigterm_flag
from essl.training.schedule import momentum_schedule, warmup_cosine


GPU_RESIDENT_BYTES = 4 << 30  # in-memory training sets up to this size are moved to the GPU once
FEW_STEPS = 20  # fewer steps per epoch than this: warn that the schedule barely moves


def is_milestone(cfg: PretrainConfig, epoch: int) -> bool:
    """Whether the checkpoint after ``epoch`` is kept (``keep_checkpoints`` lists it, or ``keep_every`` divides
    it)."""
    return epoch in cfg.keep_checkpoints or bool(cfg.keep_every and epoch % cfg.keep_every == 0)


# ------------------------------------------------------------------------------------------------ the loop
class Pretrainer:
    """Holds what one run needs; :meth:`fit` is the training loop."""

    def __init__(
        self,
        cfg: PretrainConfig,
        run_dir: Path,
        progress: bool = True,
        memory: tuple[ImageData, ImageData | None] | None = None,
    ):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.device = resolve_device(cfg.device)
        self.denv: DistEnv = init_distributed(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", cuda_index(self.denv))
        # num_threads=0: torch's count as it is; with tune_threads, on the CPU in one process, chosen by timing
        # steps from torch's count at import (ThreadTuner: faster on a loaded machine, but the count then depends on
        # the load, so runs do not repeat bit for bit; opt-in for that reason)
        tune = (
            cfg.tune_threads
            and cfg.num_threads == 0
            and self.device.type == "cpu"
            and not self.denv.enabled
            and DEFAULT_THREADS > 1
        )
        if cfg.num_threads > 0 or tune:
            torch.set_num_threads(cfg.num_threads or DEFAULT_THREADS)
        self.thread_tuner = ThreadTuner(DEFAULT_THREADS) if tune else None
        if self.device.type == "cpu":  # large tensors reused from the heap, not page-faulted in every step
            retain_freed_memory()
        else:
            malloc_setting()  # a bad ESSL_MALLOC is named on every device
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed input shapes: cuDNN autotunes its kernels once
        torch.manual_seed(cfg.seed)
        self.dtype = resolve_precision(cfg.precision, self.device)
        # config.yaml, the checkpoint and run.json record the precision used (bf16), not `auto`
        self.cfg = cfg = dataclasses.replace(cfg, precision=precision_name(self.dtype))
        self.channels_last = resolve_channels_last(cfg.channels_last)

        self.data = training_data(
            cfg.dataset,
            cfg.data_root,
            cfg.image_size,
            cfg.batch_size,
            cfg.seed,
            self.denv.rank,
            self.denv.world_size,
            subset=cfg.subset,
            shuffle=cfg.shuffle,
            workers=cfg.workers,
            pin_memory=self.device.type == "cuda",
            monitor=cfg.knn_every > 0,
            channels=cfg.channels,
            memory=memory,
        )
        check_same_on_all_ranks("training files", self.data.fingerprint, self.device)
        self.batches, self.train = self.data.batches, self.data.train
        if (
            isinstance(self.batches, TensorBatches)
            and self.device.type == "cuda"
            and self.batches.images.nbytes <= GPU_RESIDENT_BYTES
        ):
            self.batches.images = self.batches.images.to(self.device)  # no host-to-device copy per step
        channels, mean, std = self.data.channels, self.data.mean, self.data.std
        labels, classes = self.data.labels, self.data.num_classes
        self.monitor = (
            KnnMonitor.for_training(
                self.data, cfg.image_size, cfg.knn_subset, cfg.seed, cfg.knn_k, cfg.knn_t, cfg.workers
            )
            if cfg.knn_every > 0
            else None
        )
        self.normalize = Normalize(mean, std).to(self.device)
        self.views = [build_view(resolve_view(v), channels).to(self.device) for v in cfg.views]
        self.invariances = [make_group(g) for g in cfg.invariances]
        self.tasks = [
            (make_group(t.group), build_view(resolve_view(t.view), channels).to(self.device), t)
            for t in cfg.equivariance
        ]

        self.model = ESSLModel(cfg, channels).to(self.device)
        if self.channels_last:
            self.model = to_channels_last(self.model)
        if self.denv.enabled and self.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.scaled_lr = scaled_lr = cfg.lr * cfg.batch_size / 256
        self.optimizer = build_optimizer(self.model, cfg, scaled_lr)
        steps = len(self.batches)
        self.lrs = warmup_cosine(
            scaled_lr, scaled_lr * cfg.final_lr_ratio, cfg.epochs * steps, round(cfg.warmup_epochs * steps)
        )
        # BYOL / MoCo v3: the target network's EMA momentum per step (cosine from its base value to its final one)
        self.taus = (
            momentum_schedule(cfg.target_momentum, cfg.target_momentum_final, cfg.epochs * steps)
            if self.model.target is not None
            else None
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.labels = labels
        self.probe = (
            OnlineProbe(feature_dim(self.model.backbone), classes, self.device, cfg.seed)
            if cfg.online_probe and labels is not None
            else None
        )
        self.start_epoch, self.start_step = 0, 0
        self.partial: dict[str, Any] | None = None
        self.rng_restored = False
        self.saved_at: tuple[int, int] | None = None  # (epochs done, steps into the next) of the checkpoint on disk
        self.net: torch.nn.Module = self.model
        if self.denv.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            compiled = torch.compile(self.net)
            if not isinstance(compiled, torch.nn.Module):  # torch.compile wraps a module in a module
                raise TypeError(f"torch.compile returned a {type(compiled).__name__}, not a module")
            self.net = compiled
        self.logger = Logger()  # the first process's logger=... (set by pretrain()); others drop their scalars
        self.echo = True  # without the progress bar, a line per epoch on stderr

    def describe(self) -> dict[str, Any]:
        """What was loaded and resolved: the start-up summary and ``run.json``'s ``data`` and ``parameters``."""
        count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
        return {
            "data": {
                "dataset": self.cfg.dataset,
                "data_root": self.cfg.data_root,
                "images": self.batches.n,
                "classes": self.data.num_classes if self.labels is not None else None,
                "channels": self.data.channels,
                "image_size": self.train.image_size if self.train is not None else self.cfg.image_size,
                "mean": list(self.data.mean),
                "std": list(self.data.std),
                "steps_per_epoch": len(self.batches),
                "global_batch": self.batches.global_batch,
            },
            "parameters": {"backbone": count(self.model.backbone), "model": count(self.model)},
        }

    def summary(self) -> list[str]:
        """The start-up summary (printed once by the first process), with a warning when an epoch is short."""
        info, cfg = self.describe(), self.cfg
        d, params = info["data"], info["parameters"]
        device = torch.cuda.get_device_name(self.device) if self.device.type == "cuda" else "CPU"
        n = d["classes"]
        classes = "unlabelled" if n is None else f"{n} class{'es' if n != 1 else ''}"
        lines = [
            f"essl: device {self.device} ({device}), {self.denv.world_size} process(es), precision "
            f"{cfg.precision}, channels_last {'on' if self.channels_last else 'off'}, "
            + (
                f"CPU threads timed per step ({' or '.join(map(str, self.thread_tuner.candidates))})"
                if self.thread_tuner is not None
                else f"{torch.get_num_threads()} CPU thread(s)"
            ),
            f"essl: data {d['dataset']}{f' ({cfg.data_root})' if cfg.data_root else ''}: {d['images']} images, "
            f"{classes}, {d['channels']} channel(s), {d['image_size']} px; {d['steps_per_epoch']} steps per epoch "
            f"at global batch {d['global_batch']}",
            f"essl: model {cfg.method} on {cfg.backbone}: {params['backbone']:,} backbone parameters, "
            f"{params['model']:,} in the whole model (with projector, heads{', target' if self.model.target is not None else ''})",
        ]
        steps = d["steps_per_epoch"]
        if steps < FEW_STEPS:
            fits = d["images"] // FEW_STEPS
            batch = 1 << fits.bit_length() - 1 if fits >= 2 else 0  # the largest power of two giving >= 20 steps
            lower = (
                f"Lower the batch (batch_size={batch} gives {d['images'] // batch} steps) or raise"
                if batch
                else "Raise"
            )
            lines.append(
                f"essl: warning: an epoch is only {steps} step(s) ({d['images']} images at batch_size="
                f"{d['global_batch']}), so the learning-rate schedule barely moves per epoch. {lower} epochs."
            )
        return lines

    def warm_start(self, source: str) -> dict[str, list[str]]:
        """``init_from``: the backbone (and, where keys and shapes match, projector, predictor and heads) from a
        run folder (its checkpoint.pt), an exported backbone, or a released checkpoint in any official layout
        (:mod:`essl.models.layouts`). Only the weights: the optimizer, schedule and data start afresh."""
        path = Path(source).expanduser()
        if path.is_dir():
            path = path / CHECKPOINT
        if not path.is_file():
            raise EsslError(
                f"init_from={source}: no such file or run folder. Give an essl run folder, an exported "
                f"backbone, or a released checkpoint (.pth)."
            )
        state = load_safetensors(path) if path.suffix == ".safetensors" else load_checkpoint(path)
        report = init_from_weights(self.model, split_layout(state, str(path)), str(path))
        if self.denv.is_main:
            skipped = f"; not loaded: {', '.join(report['skipped'])}" if report["skipped"] else ""
            print(f"essl: init_from {path}: loaded {', '.join(report['loaded'])}{skipped}", file=sys.stderr)
        return report

    # -- state
    def state(self, epoch: int, step_in_epoch: int = 0, partial: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything :meth:`restore` needs: ``epoch`` completed epochs plus ``step_in_epoch`` steps of the next
        one (``partial`` holds that epoch's running metric sums). Collective: every rank's RNG state is
        gathered, so that a mid-epoch resume with the same number of processes is exact on every rank."""
        steps = len(self.batches)
        step = epoch * steps + step_in_epoch
        tau = float(self.taus[step - 1]) if self.taus is not None and step else None  # of the last step taken
        state: dict[str, Any] = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
            "step": epoch * steps + step_in_epoch,
            "steps_per_epoch": steps,
            "config": self.cfg.to_dict(),
            "rng": rng_state(),
            "world_size": self.denv.world_size,
            "target_momentum": tau,
            **({"online_probe": self.probe.state_dict()} if self.probe else {}),
        }
        if self.denv.enabled:
            state["rng_ranks"] = all_gather_objects(state["rng"])
        if partial is not None:
            state["partial"] = partial
            if self.denv.enabled:  # each rank's running sums: the epoch's mean over ranks continues exactly
                state["partial_ranks"] = all_gather_objects(partial)
        return state

    def save(
        self,
        epoch: int,
        step_in_epoch: int = 0,
        partial: dict[str, Any] | None = None,
        rows: list[dict[str, Any]] | None = None,
    ) -> None:
        """Write ``checkpoint.pt`` atomically on rank 0 (every rank calls this); at the end of an epoch (``rows``)
        ``metrics.jsonl`` first and a kept milestone after it. Ctrl-C waits until they are written; a failed
        write says what happened and which checkpoint is intact."""
        state = self.state(epoch, step_in_epoch, partial)
        if self.denv.is_main:
            writes: list[tuple[Path, Callable[[], object]]] = [
                (self.run_dir / CHECKPOINT, lambda: save_checkpoint(self.run_dir / CHECKPOINT, state))
            ]
            if rows is not None:
                writes.insert(0, (self.run_dir / METRICS, lambda: write_metrics(self.run_dir, rows)))
                if is_milestone(self.cfg, epoch):
                    writes.append((milestone_path(self.run_dir, epoch), lambda: keep_milestone(self.run_dir, epoch)))
            with interrupts_deferred():
                for path, write in writes:
                    try:
                        write()
                    except Exception as exc:
                        if os_failure(exc) is None:
                            raise
                        raise write_error(path, exc, self.kept(), self.go_on()) from None
                    if path.name == CHECKPOINT:
                        self.saved_at = (epoch, step_in_epoch)
        self.saved_at = (epoch, step_in_epoch)
        barrier()

    def kept(self) -> str:
        """What a stopped run leaves (for the messages of Ctrl-C and of failed writes)."""
        if self.saved_at is None:
            why = "" if self.cfg.checkpoint_every else " (the first epoch did not finish)"
            return f"No checkpoint was written yet{why}, so there is nothing to resume."
        e, st = self.saved_at
        return f"The checkpoint of {f'epoch {e + 1}, step {st}' if st else f'epoch {e}'} in {self.run_dir} is intact."

    def go_on(self) -> str:
        if self.saved_at is not None:
            return f"continue with `essl pretrain --resume {self.run_dir}`"
        return f"start the run again (with --overwrite to replace {self.run_dir})"

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint, also a mid-epoch one (step checkpoints) or one written with another number
        of processes: the model, optimizer, schedule position and data order carry over unchanged; with the same
        number of processes every rank's augmentation stream continues too, so the run is bit-identical to an
        uninterrupted one (on the CPU); with another number they are reseeded."""
        check_model_state(self.model, ckpt["model"], self.run_dir / CHECKPOINT)
        check_optimizer_state(self.optimizer, ckpt["optimizer"], self.run_dir / CHECKPOINT)
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        for group in self.optimizer.param_groups:  # a fixed-lr group (SimSiam predictor) follows a changed lr
            if group.get("fixed_lr"):
                group["lr"] = self.scaled_lr
        if self.scaler.is_enabled() and ckpt["scaler"]:  # empty when written without fp16 (precision changed)
            self.scaler.load_state_dict(ckpt["scaler"])
        if self.probe is not None and "online_probe" in ckpt:
            self.probe.load_state_dict(ckpt["online_probe"])
        steps = len(self.batches)
        if "steps_per_epoch" in ckpt:
            if int(ckpt["steps_per_epoch"]) != steps:
                raise EsslError(
                    f"The checkpoint was written with {ckpt['steps_per_epoch']} steps per epoch, but the "
                    f"data now gives {steps}: the training set or batch size differs from the run's. "
                    f"Point data_root at the same data the run started with."
                )
            self.start_epoch, self.start_step = divmod(int(ckpt["step"]), steps)
        else:  # written before step checkpoints existed: always at an epoch boundary
            self.start_epoch, self.start_step = int(ckpt["epoch"]), 0
        self.saved_at = (self.start_epoch, self.start_step)
        ranks = ckpt.get("rng_ranks") or [ckpt["rng"]]
        self.rng_restored = len(ranks) == self.denv.world_size == ckpt.get("world_size", 1)
        self.partial = self.partial_sums(ckpt) if self.start_step else None
        set_rng_state(ranks[self.denv.rank] if self.rng_restored else ckpt["rng"])
        if not self.rng_restored:  # another number of processes: fresh per-rank streams
            self.seed_augmentations(self.start_epoch)

    def partial_sums(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        """This rank's running sums of a mid-epoch checkpoint: its own when the number of processes is the same
        (the epoch's metrics then equal an uninterrupted run's), otherwise the mean over the old ranks (the epoch's
        mean over ranks is the same either way)."""
        parts = ckpt.get("partial_ranks") or [ckpt["partial"]]
        if len(parts) == self.denv.world_size == ckpt.get("world_size", 1):
            return parts[self.denv.rank]
        sums = {k: torch.stack([p["sums"][k] for p in parts]).mean(0) for k in parts[0]["sums"]}
        return {**parts[0], "sums": sums}

    def seed_augmentations(self, epoch: int) -> None:
        """Seed this process's augmentation stream from (seed, epoch, rank)."""
        torch.manual_seed(self.cfg.seed * 7919 + epoch * 31 + self.denv.rank)

    # -- one step's inputs
    @torch.no_grad()
    def make_inputs(self, x: torch.Tensor | PaddedImages) -> tuple[torch.Tensor, torch.Tensor, list]:
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        views = []
        for aug in self.views:
            v = aug(x)
            for group in self.invariances:
                v = group.sample(v)[0]
            views.append(self.normalize(v).contiguous(memory_format=fmt))
        predictions = []
        for group, aug, task in self.tasks:
            crops = aug(x)
            if task.relative:  # the reference a·x, then g·(a·x) for the elements g predicted (relative_ee)
                crops = group.sample(crops)[0]
            xg, g = group.sample(crops, repeats=task.samples) if task.samples else group.orbit(crops)
            if task.relative:
                xg = torch.cat([crops, xg])
            predictions.append((self.normalize(xg).contiguous(memory_format=fmt), g))
        return views[0], views[1], predictions

    def train_step(
        self, x: torch.Tensor | PaddedImages, it: int, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """One optimisation step (global step ``it``) on this rank's uint8 batch ``x`` (and one step of the online
        probe on ``labels``); returns the loss terms and accuracies as device tensors (nothing is read back to the
        host here). With a :class:`ThreadTuner`, the step runs at its thread count and is timed for it."""
        with self.thread_tuner.step() if self.thread_tuner is not None else contextlib.nullcontext():
            return self._train_step(x, it, labels)

    def _train_step(
        self, x: torch.Tensor | PaddedImages, it: int, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        for group in self.optimizer.param_groups:
            if not group.get("fixed_lr"):
                scale = self.cfg.bias_norm_lr_scale if group.get("lars_exclude") else 1.0
                group["lr"] = float(self.lrs[it]) * scale
        if self.device.type == "cuda" and isinstance(x, torch.Tensor) and x.device.type == "cpu" and not x.is_pinned():
            x = x.pin_memory()  # so that the copy is asynchronous (streamed batches come pinned from the loader)
        x = x.to(self.device, non_blocking=True)
        x1, x2, predictions = self.make_inputs(x)
        with autocast_context(self.device, self.dtype):
            out = self.net(x1, x2, predictions, return_features=self.probe is not None)
        features = out.pop("features", None)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.taus is not None:  # momentum target network: ξ ← τ·ξ + (1 − τ)·θ
            self.model.update_target(float(self.taus[it]))
        if self.probe is not None and labels is not None:  # features of view 1: the backbone's gradients are done
            self.probe.step(features, labels.to(self.device, non_blocking=True))
        return out

    def knn_monitor(self) -> dict[str, float]:
        """``knn_top1`` (and ``online_probe_val_top1``) on the monitor's data; {} where there is none."""
        if self.monitor is None:
            return {}
        return self.monitor.measure(
            self.model.backbone, self.device, self.dtype, self.channels_last, self.denv.is_main, self.probe
        )

    def fit(self) -> list[dict[str, Any]]:
        try:
            return self._fit()
        except KeyboardInterrupt:
            raise Interrupted(f"{self.kept()} To go on, {self.go_on()}.") from None

    def _fit(self) -> list[dict[str, Any]]:
        """Train from (start_epoch, start_step) to the end. Losses and accuracies are summed on the device and
        read every ``log_every`` steps, at step checkpoints and at the end of each epoch (no host-device sync in
        between); the non-finite check runs on those sums, before any checkpoint is written."""
        cfg, steps = self.cfg, len(self.batches)
        rows = [r for r in read_metrics(self.run_dir) if r.get("epoch", 0) <= self.start_epoch]
        bar = tqdm(
            total=cfg.epochs * steps,
            initial=self.start_epoch * steps + self.start_step,
            unit="step",
            dynamic_ncols=True,
            disable=not (self.progress and self.denv.is_main),
            desc="pretrain",
            smoothing=0.1,
        )
        with sigterm_flag(cfg.checkpoint_every > 0) as sigterm:
            for epoch in range(self.start_epoch, cfg.epochs):
                first = self.start_step if epoch == self.start_epoch else 0
                self.net.train()
                if self.denv.rank and not (first and self.rng_restored):
                    self.seed_augmentations(epoch)  # same weights everywhere, each rank its own augmentations
                part = self.partial if first else None
                sums = {k: v.to(self.device) for k, v in part["sums"].items()} if part else {}
                seen, spent = (part["seen"], part["elapsed"]) if part else (0, 0.0)
                t0, logged = time.perf_counter(), (first, sums.get("loss", 0.0))
                mark = self.mark(first, seen, spent, sums)
                targets = (
                    epoch_labels(self.batches, self.labels, epoch) if self.probe and self.labels is not None else None
                )
                for i, x in enumerate(self.batches.epoch(epoch, first), start=first):
                    it = epoch * steps + i
                    out = self.train_step(x, it, targets[i] if targets is not None else None)
                    for k, v in out.items():  # on the device: no sync
                        v = v.detach().double()
                        sums[k] = sums[k] + v if k in sums else v
                    seen += x.shape[0] * self.denv.world_size
                    bar.update(1)

                    done = i + 1
                    checkpoint_due = cfg.checkpoint_every and (it + 1) % cfg.checkpoint_every == 0 and done < steps
                    local_stop = sigterm.is_set and not self.denv.enabled  # several processes agree at syncs
                    if done % cfg.log_every and done < steps and not checkpoint_due and not local_stop:
                        continue
                    # a sync point: read the sums, check them, agree on a SIGTERM across processes
                    total = float(sums["loss"])
                    stop, nonfinite = any_rank(self.device, sigterm.is_set, not math.isfinite(total))
                    if nonfinite:
                        raise EsslError(self.nonfinite_message(epoch, logged[0] + 1, done))
                    elapsed = spent + time.perf_counter() - t0
                    bar.set_postfix(
                        ep=f"{epoch + 1}/{cfg.epochs}",
                        loss=f"{(total - float(logged[1])) / (done - logged[0]):.3f}",
                        lr=f"{self.lrs[it]:.3g}",
                        img_s=f"{seen / elapsed:.0f}",
                        refresh=False,
                    )
                    logged = (done, total)
                    if self.cfg.logger != "none":  # the same on every process: the means are all-reduced
                        self.log_window(it + 1, mark, (done, seen, elapsed), sums)
                        mark = self.mark(done, seen, elapsed, sums)
                    if checkpoint_due or (stop and done < steps):
                        partial = {"sums": {k: v.cpu() for k, v in sums.items()}, "seen": seen, "elapsed": elapsed}
                        self.save(epoch, done, partial)
                    if stop:
                        if done == steps:
                            self.end_epoch(epoch, rows, sums, seen, elapsed, bar)
                        bar.close()
                        where = (
                            f"step {done} of {steps} in epoch {epoch + 1}"
                            if done < steps
                            else f"the end of epoch {epoch + 1}"
                        )
                        raise Preempted(
                            f"SIGTERM: a checkpoint was written at {where}; continue with "
                            f"`essl pretrain --resume {self.run_dir}`."
                        )
                self.end_epoch(epoch, rows, sums, seen, spent + time.perf_counter() - t0, bar)
        bar.close()
        return rows

    def mark(self, done: int, seen: int, elapsed: float, sums: dict[str, torch.Tensor]) -> tuple:
        """Where the last logged window ended (steps into the epoch, images, seconds, the sums, probe counts)."""
        return (
            done,
            seen,
            elapsed,
            {k: v.clone() for k, v in sums.items()},
            self.probe.counts() if self.probe else None,
        )

    def log_window(self, step: int, mark: tuple, now: tuple[int, int, float], sums: dict[str, torch.Tensor]) -> None:
        """The means since ``mark`` over all processes (losses, accuracies, online probe), lr and images/s, to the
        logger at global ``step``. Collective: every process calls it at the same sync points."""
        done0, seen0, elapsed0, sums0, probe0 = mark
        done, seen, elapsed = now
        keys = list(sums)
        means = (torch.stack([sums[k] - sums0.get(k, 0.0) for k in keys]) / max(done - done0, 1)).tolist()
        values = dict(zip(keys, means))
        if self.probe is not None and probe0 is not None:
            hits, count = self.probe.counts()
            if count > probe0[1]:
                values["online_probe_top1"] = 100.0 * float(hits - probe0[0]) / (count - probe0[1])
        scalars = {f"train/{k}": v for k, v in all_reduce_mean(values, self.device).items()}
        scalars["train/lr"] = float(self.lrs[step - 1])
        scalars["train/images_per_s"] = (seen - seen0) / max(elapsed - elapsed0, 1e-9)
        if self.taus is not None:
            scalars["train/target_momentum"] = float(self.taus[step - 1])
        self.logger.log(scalars, step)

    def end_epoch(
        self,
        epoch: int,
        rows: list[dict[str, Any]],
        sums: dict[str, torch.Tensor],
        seen: int,
        elapsed: float,
        bar: tqdm,
    ) -> None:
        """The epoch's metrics line, the kNN monitor, the rolling checkpoint and any milestone."""
        cfg, steps = self.cfg, len(self.batches)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": (epoch + 1) * steps,
            "lr": float(self.lrs[(epoch + 1) * steps - 1]),
        }
        means = (torch.stack(list(sums.values())) / steps).tolist()  # one device-to-host copy
        row.update(all_reduce_mean(dict(zip(sums, means)), self.device))
        if self.taus is not None:
            row["target_momentum"] = float(self.taus[(epoch + 1) * steps - 1])
        row.update({"images_per_s": seen / elapsed, "epoch_time_s": elapsed})
        if self.probe is not None:
            row["online_probe_top1"] = self.probe.epoch_top1()
        if cfg.knn_every and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs):
            measured = self.knn_monitor()
            row.update(measured)
            if "knn_top1" in measured and self.progress:  # without the bar: in the epoch's line below
                probe = (
                    f", online probe {measured['online_probe_val_top1']:.2f}%"
                    if "online_probe_val_top1" in measured
                    else ""
                )
                bar.write(
                    f"epoch {epoch + 1}: kNN top-1 {measured['knn_top1']:.2f}% (k={cfg.knn_k}, t={cfg.knn_t}){probe}"
                )
        rows.append(row)
        self.logger.log({f"epoch/{k}": v for k, v in row.items() if k not in ("epoch", "step")}, row["step"])
        if not self.progress and self.echo and self.denv.is_main:
            print(epoch_line(row, cfg.epochs), file=sys.stderr, flush=True)
        self.save(epoch + 1, rows=rows)

    def nonfinite_message(self, epoch: int, first: int, last: int) -> str:
        """Why the loss is not finite and what to do, true to the run's state: a non-finite setting is named;
        otherwise the last checkpoint (written before the failure: checkpoints follow the check) is continued
        with a lower learning rate by a resume with changed settings."""
        where = f"epoch {epoch + 1}, step {first}" + (f"-{last}" if last > first else "")
        bad = nonfinite_settings(self.cfg)
        if bad:
            return (
                f"The loss became non-finite at {where} because {', '.join(bad)} is not a finite number. "
                f"Start a new run with a finite value."
            )
        lower = f"lr={self.cfg.lr / 2:g}"
        if self.saved_at is None:
            return (
                f"The loss became non-finite (nan or inf) at {where}, before the first checkpoint. Start the "
                f"run again with a lower learning rate ({lower}; now lr={self.cfg.lr:g})"
                f"{' or precision=fp32' if self.dtype != torch.float32 else ''}."
            )
        e, st = self.saved_at
        at = f"epoch {e + 1}, step {st}" if st else f"the end of epoch {e}"
        fp32 = " precision=fp32" if self.dtype != torch.float32 else ""
        return (
            f"The loss became non-finite (nan or inf) at {where}. The last checkpoint ({at}) was written before "
            f"that and is intact. Continue from it with a lower learning rate (now lr={self.cfg.lr:g}): "
            f"`essl pretrain --resume {self.run_dir} {lower}{fp32} --allow-change`."
        )


def epoch_line(row: dict[str, Any], epochs: int) -> str:
    """One line per epoch (printed when the progress bar is off)."""
    parts = [f"loss {row['loss']:.4f}"] + [
        f"{k.split('/', 1)[1]} acc {100 * v:.1f}%" for k, v in row.items() if k.startswith("pred_acc/")
    ]
    parts += [f"lr {row['lr']:.3g}", f"{row['images_per_s']:.0f} img/s", f"{row['epoch_time_s']:.1f} s"]
    named = (("online_probe_top1", "online probe"), ("knn_top1", "kNN top-1"), ("online_probe_val_top1", "probe val"))
    parts += [f"{label} {row[k]:.2f}%" for k, label in named if row.get(k) is not None]
    return f"epoch {row['epoch']}/{epochs}: " + ", ".join(parts)


def pretrain(
    cfg: PretrainConfig | None,
    run_dir: Path | str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    preset_name: str = "run",
    changes: dict[str, Any] | None = None,
    allow_change: bool = False,
    *,
    echo: bool = True,
    train: Any = None,
    labels: Any = None,
    test: Any = None,
    test_labels: Any = None,
) -> Path:
    """Run (or, with ``resume``, continue) a pretraining run; returns the run folder.

    A resumed run may change some settings (``changes``, e.g. ``{"epochs": 200}``; :func:`resume_changes` says
    which); every change is recorded in ``RUN/changes.jsonl`` and ``config.yaml`` is rewritten with the new
    settings. A longer ``epochs`` recomputes the warm-up + cosine schedule for the new length from the step
    reached: the lr follows the new curve from there (docs/long-runs.md).

    ``echo`` prints the start-up summary (what was loaded and resolved, and a warning when an epoch has fewer than
    20 steps) and, without the progress bar, one line per epoch; ``essl sweep`` runs its runs without.

    Data already in memory: ``train`` (a uint8 array or tensor N×H×W or N×C×H×W, floats in [0, 1], or an
    :class:`ImageData`) with optional ``labels`` (for the online probe) and an optional labelled ``test`` split
    (``test_labels``, for the kNN monitor) trains on it as ``dataset=memory``; a resumed run of such data needs
    the same arrays again."""
    main = detect_env().is_main  # under torchrun only rank 0 checks, locks and writes the folder
    run_dir = Path(run_dir) if run_dir else default_run_dir(preset_name)
    with contextlib.ExitStack() as held:  # the folder's lock (essl.runs.hold_lock), released however this ends
        if resume and main and run_dir.is_dir():  # (a missing folder: load_checkpoint says there is no run)
            held.enter_context(hold_lock(run_dir, f"run folder {run_dir}"))
        _pretrain(
            cfg,
            run_dir,
            resume,
            overwrite,
            progress,
            changes,
            allow_change,
            main,
            held,
            echo,
            train,
            labels,
            test,
            test_labels,
        )
    return run_dir


def _pretrain(
    cfg: PretrainConfig | None,
    run_dir: Path,
    resume: bool,
    overwrite: bool,
    progress: bool,
    changes: dict[str, Any] | None,
    allow_change: bool,
    main: bool,
    held: contextlib.ExitStack,
    echo: bool,
    train: Any,
    labels: Any,
    test: Any,
    test_labels: Any,
) -> None:
    """The body of :func:`pretrain`; a new run folder is claimed (locked, checked again, marked) into ``held``."""
    ckpt, changed = None, {}
    if resume:
        ckpt = load_checkpoint(run_dir / CHECKPOINT)
        stored = checkpoint_config(ckpt, run_dir / CHECKPOINT, resume=True)
        read_metrics(run_dir)  # a damaged metrics.jsonl is refused before anything is written
        cfg = config_from_dict(changes, base=stored) if changes else stored
        changed = resume_changes(stored, cfg, allow_change)
    else:
        if cfg is None:
            raise EsslError("Give pretrain() a config, or resume=True to continue a run with its stored one.")
        if changes:
            raise EsslError("changes apply to a resumed run only.")
        cfg.validate()
        if main:
            check_run_dir(run_dir, overwrite, run_inputs(cfg))
    memory = None
    if train is not None:
        if resume and cfg.dataset != "memory":
            raise EsslError(
                f"The run in {run_dir} trained on dataset={cfg.dataset}, not on data in memory; resume it without train=."
            )
        cfg = dataclasses.replace(cfg, dataset="memory", data_root=None)
        cfg.validate()
        memory = in_memory(train, labels, test, test_labels)
    elif test is not None or labels is not None or test_labels is not None:
        raise EsslError("labels=, test= and test_labels= go with train= (the training images in memory).")
    check_logger(cfg.logger)  # a missing extra is named before anything is loaded or written
    # loads the data and builds the model: a bad dataset or setting fails here, before the folder is touched
    trainer = Pretrainer(cfg, run_dir, progress, memory)
    cfg = trainer.cfg  # with the precision resolved
    if ckpt is None and cfg.init_from:
        trainer.warm_start(cfg.init_from)
    if ckpt is None and main:  # checked again under the lock: another process may have claimed it meanwhile
        where = f"run folder {run_dir}"
        held.enter_context(
            claim_folder(run_dir, "run", RUN_FILES, overwrite=overwrite, inputs=run_inputs(cfg), what=where)
        )
        write_config(run_dir, cfg)
    if ckpt is not None:
        trainer.restore(ckpt)
        if trainer.start_epoch >= cfg.epochs:
            if "epochs" in changed:
                raise EsslError(
                    f"The run in {run_dir} has already trained {trainer.start_epoch} epochs; epochs="
                    f"{cfg.epochs} would end before that. Give more epochs than {trainer.start_epoch}."
                )
            raise EsslError(
                f"The run in {run_dir} already finished all {cfg.epochs} epochs; nothing to resume. "
                f"Extend it with `essl pretrain --resume {run_dir} epochs=N`."
            )
        left = remove_temporaries(run_dir) if main else []
        if left:
            names = ", ".join(p.name for p in left)
            print(f"essl: removed what an interrupted write left in {run_dir}: {names}", file=sys.stderr)
        if changed and main:
            record_changes(run_dir, cfg, changed, ckpt, allow_change)
    trainer.echo = echo
    if main and echo:
        print("\n".join(trainer.summary()), file=sys.stderr, flush=True)
    train_and_record(trainer, resumed=ckpt is not None)


def run_inputs(cfg: PretrainConfig) -> dict[str, str | None]:
    """The paths a run reads (its data root, its ``init_from``): ``--overwrite`` never replaces a folder that is,
    holds or lies in one of them."""
    return {"data_root": cfg.data_root, "init_from": cfg.init_from}


def in_memory(train: Any, labels: Any, test: Any, test_labels: Any) -> tuple[ImageData, ImageData | None]:
    """The ``(train, test or None)`` splits of data passed in memory; the test split takes the training split's
    normalisation."""
    data = as_image_data(train, labels, name="memory-train")
    if test is None:
        return data, None
    if test_labels is None:
        raise EsslError("test= needs test_labels= (the kNN monitor measures accuracy on the test split).")
    held_out = as_image_data(
        test, test_labels, mean=data.mean, std=data.std, num_classes=data.num_classes, name="memory-test"
    )
    if held_out.channels != data.channels:
        raise EsslError(f"test has {held_out.channels} channel(s) but train has {data.channels}.")
    return data, held_out


def train_and_record(trainer: Pretrainer, resumed: bool) -> None:
    """:meth:`Pretrainer.fit` with the first process's logger and ``run.json``: this session is recorded before
    training (a new run's, or an entry under ``resumes``) and how it ended after (finished, interrupted,
    preempted, failed)."""
    if not trainer.denv.is_main:
        trainer.fit()
        return
    run_dir, cfg = trainer.run_dir, trainer.cfg
    this = provenance.session(trainer.device, cfg.precision, trainer.channels_last, trainer.denv.world_size)
    where = (trainer.start_epoch, trainer.start_step) if resumed else None
    record = provenance.start(read_run_record(run_dir) if resumed else {}, this, where)
    if "data" not in record:  # a new run (or one written before essl kept run.json)
        record.update(trainer.describe())
    write_run_record(run_dir, record)
    start_step = trainer.start_epoch * len(trainer.batches) + trainer.start_step
    status = "failed"
    try:
        trainer.logger = make_logger(cfg.logger, run_dir, cfg.to_dict(), record.get("started", ""), start_step)
        trainer.fit()
        status = "finished"
    except Preempted:
        status = "preempted"
        raise
    except Interrupted:
        status = "interrupted"
        raise
    finally:
        trainer.logger.close()
        try:
            write_run_record(run_dir, provenance.finish(record, status))
        except OSError as exc:  # the run's own outcome (or error) matters more than its end time
            print(f"essl: could not record the end of the run in {run_dir} ({exc}).", file=sys.stderr)


def record_changes(
    run_dir: Path, cfg: PretrainConfig, changed: dict[str, list[Any]], ckpt: dict[str, Any], allow_change: bool
) -> None:
    """Append the resume's changes to ``changes.jsonl`` and rewrite ``config.yaml`` with the new settings."""
    append_change(
        run_dir,
        {
            "time": datetime.now().isoformat(timespec="seconds"),
            "epoch": int(ckpt["epoch"]),
            "step": int(ckpt.get("step", 0)),
            "changes": changed,
            "allow_change": allow_change,
        },
    )
    write_config(run_dir, cfg)
