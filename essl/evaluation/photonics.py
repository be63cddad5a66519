"""Fine-tuning protocol of the photonics experiment: DOS regression from a pretrained (or random) encoder.

Official code: rdangovs/essl ``photonics/main.py`` (``finetune_model``, ``evaluate_model``), ``phc_models.py``
(``PredictorDOS``), ``utils.py`` (``DOSLoss``, ``calDOSloss``), ``load_config.py``.

- **Network**: the encoder (weights of a pretraining run, or a fresh random one for the supervised-from-scratch
  baseline) followed by the MLP 1024 → 1024 → 1024 → 512 → 400 with ReLUs (:func:`essl.models.photonics.dos_head`),
  trained **end to end** (the encoder is not frozen).
- **Target and loss**: MSE between the output and ``y − EL`` with ``y = DOS[:400]/√ε_avg`` and
  ``EL = 2π·linspace(0, 1.2, 500)[:400]`` (:func:`essl.photonics.h5io.load_phc`); ``EL`` is added back to predict.
- **Optimiser**: Adam, lr 1e-4, weight decay 1e-5 (Adam's L2 form), batch 64, reshuffled every epoch, last
  partial batch kept; every training batch gets the run's invariance augmentations (its ``invariances`` groups,
  one random element per cell and group, in order), as the official code reuses its pretraining flags.
- **Frozen encoder** (``freeze_encoder``, official ``--freeze_enc_ft``): the encoder's parameters get no
  gradient and only the head is trained. As in the official code only ``requires_grad`` is switched off: the
  model stays in training mode, so the encoder's BatchNorm running statistics still follow the fine-tuning
  batches.
- **Metric**: the relative L1 DOS error ``mean_n Σ_{i≥100} |ŷ_i − y_i| / Σ_{i≥100} |y_i|`` on the *full test set*
  (:func:`essl.photonics.dos.relative_l1`), model in eval mode, at the start of every epoch (the official
  ``finetune_model`` loop), and once more after the last one.
- **Selection (read this)**: the number reported for a fine-tuning seed is the **minimum of that curve over the
  starts of epochs 1..E**, exactly the paper's protocol (the official loop never evaluates after its last
  epoch, so neither does the minimum). It picks the epoch *on the test set* (there is no validation split), so
  it is optimistic; the error after the last epoch is reported next to it.
- **Seeds**: the labelled subset is drawn once (``subset_seed`` 1, :func:`essl.data.photonics.load_labelled_splits`);
  fine-tuning seeds 1, 2, 3 reseed torch (head initialisation, batch order, augmentations); the summary is
  mean ± std over seeds with the population std (ddof 0, ``np.std`` as in the official script).

**Checkpoint selection** (``protocol``; :func:`finetune_official`). The official ``main.py`` pretrains with a
per-step cosine over ``max(eplist) + 1 = 201`` epochs, saves the encoder after 100 and 200 epochs (``eplist =
[100, 200]``), fine-tunes both and reports, per fine-tuning seed, the minimum test error over the epochs of
*both* fine-tunings (``mintestloss`` carried from ``EP100`` into ``EP200``). ``official`` (the default of
``essl phc finetune RUN`` and ``essl phc experiment``) does the same with the run's kept milestones: for a run of
``E`` epochs (``E = 201`` for the paper) the checkpoints after ``(E − 1) // 2`` and ``E − 1`` epochs
(:func:`official_milestones`), each fine-tuned with every seed; the reported number per seed is the minimum over
epochs and over both checkpoints, the result names the winning checkpoint per seed. This **selects on the test
set twice** (epoch and checkpoint), as the official code does. ``last`` fine-tunes one checkpoint (the run's last,
or the one ``--checkpoint`` names). Random streams: each (checkpoint, seed) fine-tuning starts from ``seed``;
the official loop reseeds once per seed and runs ``EP100`` then ``EP200`` in one stream.

**Band-structure target** (``target='bands'``, the official loader's ``predict='bandstructures'``): the head
regresses ``efreq − emptylattice`` of the first ``nbands`` bands at the 625 k-points (flattened, 6,250 outputs
for 10 bands; :mod:`essl.photonics.bands`) with the same MSE, and the metric is the official ``calpercloss``
(:func:`essl.photonics.bands.fractional_error`), the mean relative error of the predicted frequencies.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from essl.catalog import CHECKPOINT_PROTOCOLS
from essl.data.photonics import FAMILIES, LabelledSplits, load_labelled_splits
from essl.errors import EsslError
from essl.evaluation.loading import file_digest, load_run
from essl.groups import make_group
from essl.models import feature_dim, make_backbone
from essl.models.layouts import split_layout
from essl.models.photonics import dos_head, encoder_for_state
from essl.photonics.bands import fractional_error
from essl.photonics.dos import relative_l1
from essl.runs import (
    hold_result,
    is_result_file,
    has_config,
    list_milestones,
    load_checkpoint,
    milestone_name,
    milestone_path,
    read_config,
    read_result,
    result_path,
    write_result,
)
from essl.runtime import resolve_device
from essl.training.validation import option_rule

RESULT_PREFIX = "phc-finetune"
#: Checkpoint selection: both official milestones and the better per seed, or one checkpoint (module docstring).
PROTOCOLS = CHECKPOINT_PROTOCOLS
#: The official protocol's result: ``<settings' name>-official.json`` beside the two milestones' own results.
OFFICIAL_SUFFIX = "-official"
#: Regression targets: the density of states (the paper's) or the band structures (official ``predict``).
TARGETS = ("dos", "bands")
#: Invariances of the supervised-from-scratch baseline: the family's base augmentations (the SimCLR presets').
DEFAULT_INVARIANCES = {"gpm": ["roll", "flip"], "blob": ["flip", "rotation"]}


@dataclass
class FinetuneSettings:
    """The fine-tuning protocol's numbers (defaults: the paper's)."""

    epochs: int = 100
    batch_size: int = 64
    lr: float = 1e-4
    weight_decay: float = 1e-5
    n_train: int = 3000
    subset_seed: int = 1
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3])
    eval_batch: int = 512
    device: str = "auto"
    freeze_encoder: bool = False
    target: str = "dos"
    nbands: int = 10

    def validate(self) -> None:
        """Each setting against its option's rule (essl/training/validation.py), then the seeds."""
        for name in (
            "epochs",
            "batch_size",
            "n_train",
            "eval_batch",
            "lr",
            "weight_decay",
            "subset_seed",
            "seeds",
            "nbands",
        ):
            flag = "--" + name.replace("_", "-")
            for value in getattr(self, name) if name == "seeds" else [getattr(self, name)]:
                rule = option_rule("phc finetune", name)
                if rule is None:
                    raise KeyError(f"the validation table has no rule for `essl phc finetune {flag}`")
                rule.check(flag, value)
        if not self.seeds:
            raise EsslError("Give at least one fine-tuning seed (e.g. --seeds 1 2 3).")
        if len(set(self.seeds)) != len(self.seeds):
            raise EsslError(f"Fine-tuning seeds must be distinct, got {self.seeds}.")
        if self.target not in TARGETS:
            raise EsslError(f"The fine-tuning target must be {' or '.join(TARGETS)}, got {self.target!r}.")

    def result_name(self) -> str:
        """``RUN_DIR/eval/<name>.json``: one file per (labelled-set size, epochs, frozen or not)."""
        target = f"-bands{self.nbands}" if self.target == "bands" else ""
        return f"{RESULT_PREFIX}-n{self.n_train}-e{self.epochs}{'-frozen' if self.freeze_encoder else ''}{target}"


class DOSRegressor(nn.Module):
    """Encoder + DOS head; the output is the prediction of ``y − EL``."""

    def __init__(self, encoder: nn.Module, head: nn.Module):
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))


@torch.no_grad()
def dos_error(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, el: torch.Tensor, batch: int = 512, target: str = "dos"
) -> float:
    """The test error of ``model(x) + EL`` against ``y`` over the whole set (eval mode): the relative L1 DOS error,
    or for ``target='bands'`` the official band-structure metric."""

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pred = torch.cat([model(x[i : i + batch].to(device)).float().cpu() for i in range(0, len(x), batch)])
    model.train(was_training)
    return float((fractional_error if target == "bands" else relative_l1)(pred + el, y))


def augment(x: torch.Tensor, groups: list) -> torch.Tensor:
    """One random element of every invariance group per cell, applied in order."""
    for group in groups:
        x = group.sample(x)[0]
    return x


def regressor(
    encoder: nn.Module, settings: FinetuneSettings, device: torch.device | str = "cpu", outputs: int = 400
) -> tuple[DOSRegressor, torch.optim.Optimizer]:
    """A copy of ``encoder`` with a fresh head of ``outputs`` values, and its Adam optimiser over the trainable
    parameters (the head only with ``freeze_encoder``)."""
    model = DOSRegressor(copy.deepcopy(encoder), dos_head(feature_dim(encoder), out_dim=outputs)).to(device)
    if settings.freeze_encoder:
        model.encoder.requires_grad_(False)
    opt = torch.optim.Adam(
        [p for p in model.parameters() if p.requires_grad], lr=settings.lr, weight_decay=settings.weight_decay
    )
    return model, opt


def finetune_seed(
    encoder: nn.Module,
    splits: LabelledSplits,
    invariances: list[str],
    settings: FinetuneSettings,
    seed: int,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Fine-tune a copy of ``encoder`` (with a fresh head) for one seed; returns its test-error curve.

    ``curve[0]`` is the error before any training, ``curve[e]`` after ``e`` epochs (``e = 1..epochs``).
    """

    device = resolve_device(settings.device)
    torch.manual_seed(seed)
    np.random.seed(seed)
    train, test = splits.train, splits.test
    model, opt = regressor(encoder, settings, device, train.y.shape[1])
    groups = [make_group(g) for g in invariances]
    n = len(train)
    curve, losses = [], []
    t0 = time.perf_counter()
    for epoch in range(settings.epochs):
        curve.append(dos_error(model, test.x, test.y, test.el, settings.eval_batch, settings.target))
        model.train()
        total = 0.0
        order = torch.randperm(n)
        for start in range(0, n, settings.batch_size):
            idx = order[start : start + settings.batch_size]
            x = augment(train.x[idx], groups).to(device)
            loss = F.mse_loss(model(x).float(), train.eldiff[idx].to(device))
            if not torch.isfinite(loss):
                raise EsslError(
                    f"The fine-tuning loss became {loss.item()} (seed {seed}, epoch {epoch + 1}); lower "
                    f"--lr (now {settings.lr})."
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        losses.append(total / n)
        if log:
            log(
                f"  seed {seed} epoch {epoch + 1}/{settings.epochs}: test error at start {curve[-1]:.4f}, "
                f"train MSE {losses[-1]:.4f}"
            )
    curve.append(dos_error(model, test.x, test.y, test.el, settings.eval_batch, settings.target))
    best = int(np.argmin(curve[:-1]))  # the official evaluation points: the starts of epochs 1..E
    return {
        "seed": seed,
        "min_error": curve[best],
        "min_after_epochs": best,
        "final_error": curve[-1],
        "curve": curve,
        "train_mse": losses,
        "wall_time_s": time.perf_counter() - t0,
    }


def summarise(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and population std (ddof 0) over seeds of the minimum and of the final error."""
    mins = np.array([r["min_error"] for r in per_seed])
    finals = np.array([r["final_error"] for r in per_seed])
    return {
        "mean": float(mins.mean()),
        "std": float(mins.std()),
        "final_mean": float(finals.mean()),
        "final_std": float(finals.std()),
        "n_seeds": len(per_seed),
        "std_ddof": 0,
    }


@dataclass
class EncoderSource:
    """The encoder to fine-tune and what to say about it in the result."""

    encoder: nn.Module
    family: str
    invariances: list[str]
    out_dir: Path
    source: dict[str, Any]
    checkpoint: dict[str, Any] | None
    data_root: str | None


def encoder_from_run(run_dir: Path | str, checkpoint: str | None = None) -> EncoderSource:
    """The backbone of an ``essl pretrain`` run on ``phc-gpm``/``phc-blob`` and the run's invariances;
    ``checkpoint`` picks a kept milestone (``epoch_0100``) instead of the last checkpoint."""

    run_path = Path(run_dir)
    if not run_path.exists():
        raise EsslError(
            f"Run folder {run_path} does not exist. Pass a folder written by `essl pretrain` on a "
            f"phc-gpm or phc-blob preset, or use --scratch."
        )
    backbone, cfg, ckpt_path, meta = load_run(run_path, checkpoint)
    family = cfg.dataset.removeprefix("phc-")
    if family not in FAMILIES:
        raise EsslError(
            f"{run_path} was pretrained on {cfg.dataset!r}; photonics fine-tuning needs a run on phc-gpm or phc-blob."
        )
    out_dir = run_path if run_path.is_dir() else run_path.parent
    source = {
        "kind": "run",
        "run_dir": str(out_dir),
        "method": cfg.method,
        "pretrain_dataset": cfg.dataset,
        "backbone": cfg.backbone,
        "pretrain_epochs": cfg.epochs,
        "epochs_done": meta.get("epoch"),
        "milestone": meta.get("milestone"),
        "invariances": list(cfg.invariances),
        "equivariance": [{"group": t.group, "weight": t.weight} for t in cfg.equivariance],
    }
    record = {"path": str(ckpt_path), "epoch": meta.get("epoch"), "sha256": file_digest(ckpt_path)}
    return EncoderSource(backbone, family, list(cfg.invariances), out_dir, source, record, cfg.data_root)


def encoder_from_file(
    path: Path | str, family: str, out_dir: Path | str, invariances: list[str] | None = None
) -> EncoderSource:
    """A photonics encoder saved by the official code (``EP100``/``EP200`` files of ``pretrain_model``, keys
    ``enc.enc_block2d.*``, ``enc.fcpart.*``; a whole ``SimCLR``/``SimCLRwEE`` or fine-tuning ``Net`` state) or an
    essl encoder state dict (``features.*``, ``fc.*``), recognised by the one layout detector
    :func:`essl.models.layouts.split_layout`; the family's default invariances unless given."""

    if family not in FAMILIES:
        raise EsslError(f"--backbone-file needs --family gpm or --family blob, got {family!r}.")
    path = Path(path)
    ckpt = load_checkpoint(path)
    if isinstance(ckpt, dict) and "config" in ckpt and "model" in ckpt:
        raise EsslError(f"{path} is an essl run checkpoint; fine-tune its run folder (essl phc finetune RUN_DIR).")
    weights = split_layout(ckpt, str(path))
    state = weights.backbone
    layout = (
        "official (enc.enc_block2d.*, enc.fcpart.*)"
        if weights.layout == "official-photonics"
        else "essl (features.*, fc.*)"
    )
    if not any(k.startswith("features.") for k in state):
        raise EsslError(
            f"{path} holds no photonics encoder weights: expected the official keys "
            f"enc.enc_block2d.* / enc.fcpart.* (photonics/phc_models.py) or essl's features.* / fc.* "
            f"(keys found: {', '.join(list(state)[:6])})."
        )
    encoder = encoder_for_state(state)
    try:
        encoder.load_state_dict(state)
    except RuntimeError as exc:
        raise EsslError(f"{path} does not fit the photonics encoder: {str(exc).splitlines()[0]}") from None
    inv = list(DEFAULT_INVARIANCES[family] if invariances is None else invariances)
    source = {
        "kind": "file",
        "file": str(path),
        "layout": layout,
        "ptepoch": ckpt.get("ptepoch"),
        "widths": [m.out_channels for m in encoder.features if isinstance(m, nn.Conv2d)],
        "invariances": inv,
        "family": family,
    }
    checkpoint = {"path": str(path), "epoch": ckpt.get("ptepoch"), "sha256": file_digest(path)}
    return EncoderSource(encoder, family, inv, Path(out_dir), source, checkpoint, None)


def encoder_from_scratch(
    family: str, out_dir: Path | str, backbone: str = "phc_cnn", invariances: list[str] | None = None, seed: int = 1
) -> EncoderSource:
    """A randomly initialised encoder (the supervised-from-scratch baseline)."""

    if family not in FAMILIES:
        raise EsslError(f"--scratch needs --family gpm or --family blob, got {family!r}.")
    torch.manual_seed(seed)
    encoder = make_backbone(backbone, 1)
    inv = list(DEFAULT_INVARIANCES[family] if invariances is None else invariances)
    source = {"kind": "scratch", "backbone": backbone, "invariances": inv, "family": family}
    return EncoderSource(encoder, family, inv, Path(out_dir), source, None, None)


def result_stem(src: EncoderSource, settings: FinetuneSettings) -> str:
    """``phc-finetune-n<N>-e<E>``, with ``-epoch_NNNN`` when a kept milestone is fine-tuned."""
    milestone = src.source.get("milestone")
    return settings.result_name() + (f"-{milestone}" if milestone else "")


def finetune(
    src: EncoderSource,
    data_root: str | Path | None,
    settings: FinetuneSettings,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
    verbose: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """:func:`finetune_all`, holding its result file (:func:`essl.runs.hold_result`) so that one process at a time
    computes it; ``overwrite`` replaces only a result file essl wrote."""
    settings.validate()
    path = result_path(src.out_dir, result_stem(src, settings))
    if path.exists() and overwrite and not is_result_file(path):
        raise EsslError(
            f"--overwrite will not replace {path}: it is not a result file written by essl. Nothing was "
            f"touched. Move it away yourself, or evaluate into another folder."
        )
    with hold_result(src.out_dir, path.stem, f"the result {path}"):
        return finetune_all(src, data_root, settings, overwrite, log, verbose)


def finetune_all(
    src: EncoderSource,
    data_root: str | Path | None,
    settings: FinetuneSettings,
    overwrite: bool = False,
    log: Callable[[str], None] | None = print,
    verbose: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Run the protocol for every seed and write ``OUT/eval/phc-finetune-n<N>-e<E>.json``; returns (path, payload).

    An existing result of the same name is an error unless ``overwrite``; it is written only when all seeds
    finished, so an interrupted run leaves nothing half-written.
    """

    settings.validate()
    root = data_root or src.data_root
    path = result_path(src.out_dir, result_stem(src, settings))
    if path.exists() and not overwrite:
        raise EsslError(
            f"{path} already exists (a fine-tuning result with the same --n-train and --epochs); pass "
            f"--overwrite to replace it."
        )
    for g in src.invariances:  # fail before any work on a bad group name
        make_group(g)
    splits = load_labelled_splits(
        src.family, root, settings.n_train, settings.subset_seed, settings.target, settings.nbands
    )
    if src.encoder.feature_dim != 1024 and log:
        log(f"note: the encoder gives {src.encoder.feature_dim}-d features; the DOS head adapts its input width.")
    per_seed = []
    t0 = time.perf_counter()
    for seed in settings.seeds:
        res = finetune_seed(src.encoder, splits, src.invariances, settings, seed, log if verbose else None)
        per_seed.append(res)
        if log:
            log(
                f"{src.family} fine-tune seed {seed}: min test error {res['min_error']:.4f} (after "
                f"{res['min_after_epochs']} epochs), after the last epoch {res['final_error']:.4f} "
                f"[{res['wall_time_s']:.0f} s]"
            )
    summary = summarise(per_seed)
    payload = {
        "protocol": {
            "name": "phc-dos-finetune",
            "description": f"encoder + MLP 1024-1024-1024-512-{splits.train.y.shape[1]} (ReLU) "
            + ("with the encoder frozen (head trained only)" if settings.freeze_encoder else "fine-tuned end to end")
            + " with MSE on y - EL; Adam; the run's invariance augmentations on every training batch",
            "metric": (
                "fractional band error (official calpercloss): mean over test cells, k-points and bands "
                "of |y_hat - y| / y (0 where y = 0), y = efreq[:, :nbands], y_hat = output + emptylattice"
                if settings.target == "bands"
                else "relative L1 DOS error: mean over test cells of sum_{i>=100} |y_hat_i - y_i| / "
                "sum_{i>=100} |y_i|, y = DOS[:400]/sqrt(epsavg), y_hat = output + EL"
            ),
            "selection": "minimum of the full-test-set error over the starts of epochs 1..E (the official "
            "evaluation points): the paper's protocol, which selects the epoch on the test set "
            "(optimistic; final_mean is the error after the last epoch)",
            "std": "population std over fine-tuning seeds (ddof 0, as np.std in the official script)",
            "invariances": src.invariances,
            **{k: v for k, v in asdict(settings).items() if k != "seeds"},
        },
        "data": splits.info,
        "family": src.family,
        "source": src.source,
        "checkpoint": src.checkpoint,
        "seeds": {"finetune": list(settings.seeds), "subset": settings.subset_seed},
        "summary": summary,
        "per_seed": per_seed,
        "wall_time_s": time.perf_counter() - t0,
    }
    if path.exists() and not overwrite:  # written by another process meanwhile (without the lock)
        raise EsslError(f"{path} was written by another process meanwhile; it is left as it is: {summary}")
    out = write_result(src.out_dir, result_stem(src, settings), payload)
    if log:
        what = "fractional band error" if settings.target == "bands" else "relative DOS error"
        log(
            f"{src.family}: {what} {summary['mean']:.4f} ± {summary['std']:.4f} (min over epochs, "
            f"selected on the test set), after the last epoch {summary['final_mean']:.4f} ± "
            f"{summary['final_std']:.4f}; written to {out}"
        )
    return out, payload


# ------------------------------------------------------------------------------------ checkpoint selection
def official_milestones(epochs: int) -> tuple[int, int]:
    """The two checkpoints the official protocol fine-tunes in a run of ``epochs`` epochs: after ``(E − 1) // 2``
    and ``E − 1`` (``E = 201`` gives the official 100 and 200: ``eplist = [100, 200]`` of a ``max(eplist) + 1``
    epoch cosine, whose last epoch is trained but never saved). Fewer than 3 epochs is an :class:`EsslError`."""
    if epochs < 3:
        raise EsslError(
            f"The official protocol fine-tunes the checkpoints after (E-1)//2 and E-1 of E pretraining epochs "
            f"(100 and 200 of 201); a run of {epochs} epoch(s) has no two such checkpoints. Pretrain at least 3 "
            f"epochs, or fine-tune one checkpoint with --protocol last."
        )
    return (epochs - 1) // 2, epochs - 1


def protocol_matches(payload: dict[str, Any], settings: FinetuneSettings) -> bool:
    """Whether a stored fine-tuning result was computed with ``settings`` (every protocol number and the seeds)."""
    proto = payload.get("protocol", {})
    keys = (
        "epochs",
        "batch_size",
        "lr",
        "weight_decay",
        "n_train",
        "subset_seed",
        "freeze_encoder",
        "target",
        "nbands",
    )
    older = {"freeze_encoder": False, "target": "dos", "nbands": 10}  # results written before these settings
    return all(proto.get(k, older.get(k)) == getattr(settings, k) for k in keys) and payload.get("seeds", {}).get(
        "finetune"
    ) == list(settings.seeds)


def ensure_finetuned(
    src: EncoderSource, data_root: str | Path | None, settings: FinetuneSettings, log: Callable[[str], Any] = print
) -> dict[str, Any]:
    """Fine-tune ``src`` unless its folder already holds a result of the same protocol; returns the payload."""
    stem = result_stem(src, settings)
    payload = read_result(src.out_dir, stem)
    if payload is not None:
        if not protocol_matches(payload, settings):
            raise EsslError(
                f"{result_path(src.out_dir, stem)} was fine-tuned with another protocol (seeds, lr, batch ...); "
                f"it is left untouched. Use another --out, or delete it."
            )
        log(f"reusing {result_path(src.out_dir, stem)}")
        return payload
    return finetune(src, data_root, settings, log=log)[1]


def official_checkpoints(run_dir: Path | str) -> tuple[Path, list[int]]:
    """The run folder and the epochs of its two official milestones, both kept (else an :class:`EsslError` that
    says how to keep them); reads only the run's config."""
    run_path = Path(run_dir)
    if not run_path.is_dir() or not has_config(run_path):
        raise EsslError(
            f"{run_path} is not a run folder of `essl pretrain` (the official protocol fine-tunes two of its "
            f"kept checkpoints). Pass a run folder, or --protocol last with a checkpoint file."
        )
    epochs = read_config(run_path).epochs
    wanted = list(official_milestones(epochs))
    missing = [milestone_name(e) for e in wanted if not milestone_path(run_path, e).is_file()]
    if missing:
        kept = list_milestones(run_path)
        raise EsslError(
            f"The official protocol fine-tunes the checkpoints after epochs {wanted[0]} and {wanted[1]} of this "
            f"{epochs}-epoch run (as EP100 and EP200 of the official 201-epoch run), but {run_path} has no "
            f"{' or '.join(missing)} (kept: {', '.join(kept) or 'none'}). Pretrain with "
            f"keep_checkpoints=[{wanted[0]}, {wanted[1]}] (`essl phc experiment` does), or fine-tune one "
            f"checkpoint with --protocol last [--checkpoint NAME]."
        )
    return run_path, wanted


def select_over_checkpoints(payloads: dict[str, dict[str, Any]], settings: FinetuneSettings) -> dict[str, Any]:
    """The official protocol's result from the results of its checkpoints (``{milestone name: payload}``, oldest
    first): per seed the minimum over epochs and checkpoints and the checkpoint that gave it (the older one on a
    tie); ``final_error`` is the newest checkpoint's error after its last epoch (no selection at all)."""
    names = list(payloads)
    per_seed = []
    for i, seed in enumerate(settings.seeds):
        rows = {n: payloads[n]["per_seed"][i] for n in names}
        if any(r["seed"] != seed for r in rows.values()):
            raise EsslError(f"The results of {', '.join(names)} do not hold seed {seed} in the same place.")
        best = min(names, key=lambda n: rows[n]["min_error"])
        per_seed.append(
            {
                "seed": seed,
                "min_error": rows[best]["min_error"],
                "checkpoint": best,
                "min_after_epochs": rows[best]["min_after_epochs"],
                "final_error": rows[names[-1]]["final_error"],
                "per_checkpoint": {
                    n: {k: rows[n][k] for k in ("min_error", "min_after_epochs", "final_error")} for n in names
                },
            }
        )
    first, last = payloads[names[0]], payloads[names[-1]]
    source = {k: v for k, v in last["source"].items() if k != "milestone"}
    return {
        "protocol": {
            **last["protocol"],
            "selection": "official: per fine-tuning seed, the minimum of the full-test-set error over the starts "
            "of fine-tuning epochs 1..E AND over the two pretraining checkpoints (rdangovs/essl photonics/main.py, "
            "mintestloss over EP100 and EP200). TEST-SET SELECTION of the epoch and of the checkpoint, as in the "
            "official code (optimistic; final_mean is the newer checkpoint's error after its last epoch)",
        },
        "selection": {
            "protocol": "official",
            "milestones": names,
            "milestone_epochs": [payloads[n]["checkpoint"]["epoch"] for n in names],
            "pretrain_epochs": last["source"].get("pretrain_epochs"),
            "winners": {str(r["seed"]): r["checkpoint"] for r in per_seed},
            "test_set_selection": True,
        },
        "data": first["data"],
        "family": last["family"],
        "source": source,
        "checkpoints": {n: payloads[n]["checkpoint"] for n in names},
        "seeds": last["seeds"],
        "summary": summarise(per_seed),
        "per_seed": per_seed,
        "wall_time_s": sum(p["wall_time_s"] for p in payloads.values()),
    }


def finetune_official(
    run_dir: Path | str,
    data_root: str | Path | None,
    settings: FinetuneSettings,
    overwrite: bool = False,
    reuse: bool = False,
    log: Callable[[str], Any] = print,
    verbose: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """The official selection protocol on a run (module docstring): fine-tune both milestones (each result is
    written as for ``--checkpoint NAME``, and one already there with the same settings is reused, so an
    interrupted run continues), then write ``RUN/eval/<name>-official.json``. An existing combined result is an
    error unless ``overwrite`` (recompute everything) or ``reuse`` (return it when its settings match)."""
    settings.validate()
    run_path, epochs = official_checkpoints(run_dir)
    stem = settings.result_name() + OFFICIAL_SUFFIX
    path = result_path(run_path, stem)
    if path.exists() and not overwrite:
        stored = read_result(run_path, stem) if reuse else None
        if stored is not None and protocol_matches(stored, settings):
            log(f"reusing {path}")
            return path, stored
        raise EsslError(
            f"{path} already exists (an official-protocol result with the same --n-train and --epochs); "
            + ("its seeds or settings differ; " if reuse else "")
            + "pass --overwrite to replace it, or use another output folder."
        )
    payloads = {}
    for epoch in epochs:
        src = encoder_from_run(run_path, str(epoch))
        name = str(src.source["milestone"])
        if overwrite:
            payloads[name] = finetune(src, data_root, settings, overwrite=True, log=log, verbose=verbose)[1]
        else:
            payloads[name] = ensure_finetuned(src, data_root, settings, log)
    payload = select_over_checkpoints(payloads, settings)
    out = write_result(run_path, stem, payload)
    s = payload["summary"]
    winners = ", ".join(f"seed {k}: {v}" for k, v in payload["selection"]["winners"].items())
    log(
        f"{payload['family']}: official protocol, {' and '.join(payloads)}: relative error {s['mean']:.4f} ± "
        f"{s['std']:.4f} (min over epochs and both checkpoints, selected on the test set; {winners}); newest "
        f"checkpoint after the last epoch {s['final_mean']:.4f} ± {s['final_std']:.4f}; written to {out}"
    )
    return out, payload
