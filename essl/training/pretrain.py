"""The pretraining loop, in one place (in the style of the FAIR reference scripts).

Per step: draw two SSL views and, for every predicted group, the orbit of a small crop (all on the training
device, per-sample random), run :class:`ESSLModel` under autocast, step the optimiser with the precomputed lr.
Per epoch: a JSON line in ``metrics.jsonl``, the kNN monitor every ``knn_every`` epochs, and an atomically
written ``checkpoint.pt`` from which ``--resume`` continues exactly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from essl.augmentation import Normalize, build_view, view_recipe
from essl.data.sources import training_data
from essl.errors import EsslError, Interrupted, interrupts_deferred, os_failure, write_error
from essl.groups import make_group
from essl.runs import (CHECKPOINT, CONFIG, METRICS, check_run_dir, default_run_dir, load_checkpoint,
                       prepare_run_dir, read_metrics, save_checkpoint, write_config, write_metrics)
from essl.runtime import autocast_context, resolve_channels_last, resolve_device, resolve_precision
from essl.training.checkpoint import rng_state, set_rng_state
from essl.training.config import PretrainConfig, config_from_dict
from essl.training.distributed import (DistEnv, all_reduce_mean, barrier, check_same_on_all_ranks, cuda_index,
                                       init_distributed)
from essl.training.model import ESSLModel
from essl.training.monitor import KnnMonitor
from essl.training.online_probe import OnlineProbe, epoch_labels
from essl.training.optim import build_optimizer
from essl.training.schedule import momentum_schedule, warmup_cosine


# ------------------------------------------------------------------------------------------------ the loop
class Pretrainer:
    """Holds what one run needs; :meth:`fit` is the training loop."""

    def __init__(self, cfg: PretrainConfig, run_dir: Path, progress: bool = True):
        self.cfg, self.run_dir, self.progress = cfg, Path(run_dir), progress
        self.device = resolve_device(cfg.device)
        self.denv: DistEnv = init_distributed(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", cuda_index(self.denv))
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        torch.manual_seed(cfg.seed)
        self.dtype = resolve_precision(cfg.precision, self.device)
        self.channels_last = resolve_channels_last(cfg.channels_last)

        self.data = training_data(cfg.dataset, cfg.data_root, cfg.image_size, cfg.batch_size, cfg.seed,
                                  self.denv.rank, self.denv.world_size, subset=cfg.subset, shuffle=cfg.shuffle,
                                  workers=cfg.workers, pin_memory=self.device.type == "cuda",
                                  monitor=cfg.knn_every > 0)
        check_same_on_all_ranks("training files", self.data.fingerprint, self.device)
        self.batches, self.train = self.data.batches, self.data.train
        channels, mean, std = self.data.channels, self.data.mean, self.data.std
        labels, classes = self.data.labels, self.data.num_classes
        self.monitor = (KnnMonitor.for_training(self.data, cfg.image_size, cfg.knn_subset, cfg.seed, cfg.knn_k,
                                                cfg.knn_t, cfg.workers) if cfg.knn_every > 0 else None)
        self.normalize = Normalize(mean, std).to(self.device)
        self.views = [build_view(view_recipe(v), channels).to(self.device) for v in cfg.views]
        self.invariances = [make_group(g) for g in cfg.invariances]
        self.tasks = [(make_group(t.group), build_view(view_recipe(t.view), channels).to(self.device), t)
                      for t in cfg.equivariance]

        self.model = ESSLModel(cfg, channels).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if self.denv.enabled and self.device.type == "cuda":
            self.model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        scaled_lr = cfg.lr * cfg.batch_size / 256
        self.optimizer = build_optimizer(self.model, cfg, scaled_lr)
        steps = len(self.batches)
        self.lrs = warmup_cosine(scaled_lr, scaled_lr * cfg.final_lr_ratio, cfg.epochs * steps,
                                 round(cfg.warmup_epochs * steps))
        # BYOL / MoCo v3: the target network's EMA momentum per step (cosine from its base value to its final one)
        self.taus = (momentum_schedule(cfg.target_momentum, cfg.target_momentum_final, cfg.epochs * steps)
                     if self.model.target is not None else None)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)
        self.labels = labels
        self.probe = (OnlineProbe(self.model.backbone.feature_dim, classes, self.device, cfg.seed)
                      if cfg.online_probe and labels is not None else None)
        self.start_epoch = 0
        self.saved_epoch = 0  # the epoch of the checkpoint on disk (0: none yet)
        self.net: torch.nn.Module = self.model
        if self.denv.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.compile:
            self.net = torch.compile(self.net)

    # -- state
    def state(self, epoch: int) -> dict[str, Any]:
        step = epoch * len(self.batches)
        tau = float(self.taus[step - 1]) if self.taus is not None and step else None  # of the last step taken
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict(), "epoch": epoch, "step": step,
                "config": self.cfg.to_dict(), "rng": rng_state(), "world_size": self.denv.world_size,
                "target_momentum": tau, **({"online_probe": self.probe.state_dict()} if self.probe else {})}

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continue from a checkpoint, also one written with another number of processes: the model, optimizer,
        schedule position and data order carry over unchanged; only the augmentation random streams differ."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scaler.load_state_dict(ckpt["scaler"])
        if self.probe is not None and "online_probe" in ckpt:
            self.probe.load_state_dict(ckpt["online_probe"])
        self.start_epoch = self.saved_epoch = int(ckpt["epoch"])
        set_rng_state(ckpt["rng"])  # rank 0's stream: a resume with the same process count is exact
        if self.denv.world_size != ckpt.get("world_size", 1):
            self.seed_augmentations(self.start_epoch)
        # ranks > 0 reseed at the start of every epoch (fit), so they resume exactly too

    def seed_augmentations(self, epoch: int) -> None:
        """Seed this process's augmentation stream from (seed, epoch, rank)."""
        torch.manual_seed(self.cfg.seed * 7919 + epoch * 31 + self.denv.rank)

    # -- one step's inputs
    @torch.no_grad()
    def make_inputs(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
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

    def knn_monitor(self) -> dict[str, float]:
        """``knn_top1`` (and ``online_probe_val_top1``) on the monitor's data; {} where there is none."""
        if self.monitor is None:
            return {}
        return self.monitor.measure(self.model.backbone, self.device, self.dtype, self.channels_last,
                                    self.denv.is_main, self.probe)

    def fit(self) -> list[dict[str, Any]]:
        try:
            return self._fit()
        except KeyboardInterrupt:
            raise Interrupted(f"{self.kept()} To go on, {self.go_on()}.") from None

    def _fit(self) -> list[dict[str, Any]]:
        cfg, steps = self.cfg, len(self.batches)
        rows = [r for r in read_metrics(self.run_dir) if r.get("epoch", 0) <= self.start_epoch]
        bar = tqdm(total=cfg.epochs * steps, initial=self.start_epoch * steps, unit="step", dynamic_ncols=True,
                   disable=not (self.progress and self.denv.is_main), desc="pretrain", smoothing=0.1)
        for epoch in range(self.start_epoch, cfg.epochs):
            self.net.train()
            if self.denv.rank:  # same weights everywhere, but each rank its own augmentation stream
                self.seed_augmentations(epoch)
            sums: dict[str, float] = {}
            t0, seen = time.perf_counter(), 0
            targets = epoch_labels(self.batches, self.labels, epoch) if self.probe else None
            for i, x in enumerate(self.batches.epoch(epoch)):
                it = epoch * steps + i
                for group in self.optimizer.param_groups:
                    if not group.get("fixed_lr"):
                        scale = cfg.bias_norm_lr_scale if group.get("lars_exclude") else 1.0
                        group["lr"] = float(self.lrs[it]) * scale
                x = x.to(self.device, non_blocking=True)
                x1, x2, predictions = self.make_inputs(x)
                with autocast_context(self.device, self.dtype):
                    out = self.net(x1, x2, predictions, return_features=self.probe is not None)
                features = out.pop("features", None)
                loss = out["loss"]
                if not torch.isfinite(loss):
                    raise EsslError(f"The loss became {loss.item()} at epoch {epoch + 1}, step {i + 1}. Lower lr "
                                    f"(now {cfg.lr}) or use precision=fp32; resume from the last checkpoint with "
                                    f"--resume after fixing the setting in {self.run_dir / CONFIG}.")
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(self.optimizer)
                self.scaler.update()
                if self.taus is not None:  # momentum target network: ξ ← τ·ξ + (1 − τ)·θ
                    self.model.update_target(float(self.taus[it]))
                if self.probe is not None:  # detached features of view 1: the backbone's gradients are done
                    self.probe.step(features, targets[i].to(self.device, non_blocking=True))
                values = {k: v.item() for k, v in out.items()}
                for k, v in values.items():
                    sums[k] = sums.get(k, 0.0) + v
                seen += x.shape[0] * self.denv.world_size
                bar.update(1)
                bar.set_postfix(ep=f"{epoch + 1}/{cfg.epochs}", loss=f"{values['loss']:.3f}",
                                lr=f"{self.lrs[it]:.3g}", img_s=f"{seen / (time.perf_counter() - t0):.0f}",
                                refresh=False)
            elapsed = time.perf_counter() - t0
            row: dict[str, Any] = {"epoch": epoch + 1, "step": (epoch + 1) * steps, "lr": float(self.lrs[it])}
            if self.taus is not None:
                row["target_momentum"] = float(self.taus[it])
            row.update(all_reduce_mean({k: v / steps for k, v in sums.items()}, self.device))
            row.update({"images_per_s": seen / elapsed, "epoch_time_s": elapsed})
            if self.probe is not None:
                row["online_probe_top1"] = self.probe.epoch_top1()
            if cfg.knn_every and ((epoch + 1) % cfg.knn_every == 0 or epoch + 1 == cfg.epochs):
                measured = self.knn_monitor()
                row.update(measured)
                if "knn_top1" in measured:
                    probe = (f", online probe {measured['online_probe_val_top1']:.2f}%"
                             if "online_probe_val_top1" in measured else "")
                    bar.write(f"epoch {epoch + 1}: kNN top-1 {measured['knn_top1']:.2f}% (k={cfg.knn_k}, "
                              f"t={cfg.knn_t}){probe}")
            rows.append(row)
            if self.denv.is_main:
                self.commit(rows, epoch + 1)
            barrier()
        bar.close()
        return rows

    def commit(self, rows: list[dict[str, Any]], epoch: int) -> None:
        """Write the metrics and the checkpoint of ``epoch`` (Ctrl-C waits until both are written); a failed
        write says what happened and which checkpoint is intact."""
        with interrupts_deferred():
            for path, write in ((self.run_dir / METRICS, lambda: write_metrics(self.run_dir, rows)),
                                (self.run_dir / CHECKPOINT,
                                 lambda: save_checkpoint(self.run_dir / CHECKPOINT, self.state(epoch)))):
                try:
                    write()
                except Exception as exc:
                    if os_failure(exc) is None:
                        raise
                    raise write_error(path, exc, self.kept(), self.go_on()) from None
            self.saved_epoch = epoch

    def kept(self) -> str:
        """What a stopped run leaves (for the messages of Ctrl-C and of failed writes)."""
        if self.saved_epoch:
            return f"The checkpoint of epoch {self.saved_epoch} in {self.run_dir} is intact."
        return "No checkpoint was written yet (the first epoch did not finish), so there is nothing to resume."

    def go_on(self) -> str:
        if self.saved_epoch:
            return f"continue with `essl pretrain --resume {self.run_dir}`"
        return f"start the run again (with --overwrite to replace {self.run_dir})"


def pretrain(cfg: PretrainConfig | None, run_dir: Path | str | None = None, resume: bool = False,
             overwrite: bool = False, progress: bool = True, preset_name: str = "run") -> Path:
    """Run (or, with ``resume``, continue) a pretraining run; returns the run folder."""
    from essl.training.distributed import detect_env

    main = detect_env().is_main
    run_dir = Path(run_dir) if run_dir else default_run_dir(preset_name)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / CHECKPOINT)
        cfg = config_from_dict(ckpt["config"])
    else:
        if cfg is None:
            raise EsslError("Give pretrain() a config, or resume=True to continue a run with its stored one.")
        cfg.validate()
        if main:
            check_run_dir(run_dir, overwrite)
    # loads the data and builds the model: a bad dataset or setting fails here, before the folder is touched
    trainer = Pretrainer(cfg, run_dir, progress)
    if ckpt is None and main:
        prepare_run_dir(run_dir, overwrite)
        write_config(run_dir, cfg)
    if ckpt is not None:
        trainer.restore(ckpt)
        if trainer.start_epoch >= cfg.epochs:
            raise EsslError(f"The run in {run_dir} already finished all {cfg.epochs} epochs; nothing to resume.")
    trainer.fit()
    return run_dir

