"""Pretraining configuration: one flat dataclass, filled from a preset file plus ``key=value`` overrides.

Presets are YAML files in ``essl/presets/`` (or any path). There is no inheritance between presets: each file
states every setting that differs from the defaults below, with its source.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from essl.errors import EsslError
from essl.training.validation import CONFIG_RULES, METHODS, TASK_RULES, check_config  # noqa: F401 (METHODS)

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
#: Methods with a momentum (EMA) target network: BYOL (Grill et al. 2020), MoCo v3 (Chen, Xie & He 2021).
MOMENTUM_METHODS = ("byol", "mocov3")


@dataclass
class EquivarianceTask:
    """One predicted group: ``weight`` is λ, ``view`` the prediction-branch recipe, ``head`` the head kind;
    ``samples`` 0 predicts every element on every crop (the paper's orbit), ``r`` > 0 predicts ``r`` uniformly
    drawn elements per crop (cheaper for large groups such as the 24-element jigsaw).

    Options of the official photonics ``SimCLRwEE`` (rdangovs/essl ``photonics/ssl_mode.py``):
    ``relative: true`` predicts the element relating two transformed copies of a crop from their two embeddings
    concatenated (``relative_ee``; :mod:`essl.objectives.equivariance`); ``loss`` is ``xent`` (cross-entropy over
    the elements, the paper's), or ``l1`` / ``mse``, which regress the element's index with a one-output head
    (``eeloss``)."""

    group: str = "rotation"
    weight: float = 0.4
    view: str | dict = "cifar_small"  # a recipe name, NAME@SIZE, or {recipe: NAME, field: value, ...}
    head: str = "cifar_simclr"
    samples: int = 0
    relative: bool = False
    loss: str = "xent"


@dataclass
class PretrainConfig:
    # data
    dataset: str = "mnist5k"
    data_root: str | None = None
    image_size: int = 32  # image folders only: decode size (shorter side resized to it, centre square kept)
    channels: int = 0  # image folders only: 1 decodes greyscale, 3 RGB (0: RGB); arrays and built-ins keep theirs
    subset: int = 0  # train on a seeded, class-stratified subset of this many images (0: all)
    # model
    backbone: str = "small_cnn"
    projector: str = "small"
    predictor_hidden: int = 512  # predictor width (SimSiam, BYOL, MoCo v3)
    init_from: str | None = None  # warm start: a run folder, an exported backbone or a released checkpoint
    # objective
    method: str = "simclr"
    temperature: float = 0.5
    full_nt_xent: bool = False  # SimCLR with 2N-2 negatives instead of the cross-view InfoNCE
    barlow_lambda: float = 0.0051
    vicreg_sim: float = 25.0  # VICReg weights λ (invariance), μ (variance), ν (covariance)
    vicreg_var: float = 25.0
    vicreg_cov: float = 1.0
    target_momentum: float = 0.99  # BYOL / MoCo v3: EMA momentum τ of the target network at the first step
    target_momentum_final: float = 1.0  # ... raised to this by a cosine schedule over training
    barlow_official_gpus: int = 0  # W > 0: the official code's Barlow Twins gradient on W GPUs (exact / W)
    views: list[str | dict] = field(default_factory=lambda: ["mnist", "mnist"])  # names, NAME@SIZE or mappings
    invariances: list[str] = field(default_factory=list)  # groups applied at random to the SSL views
    equivariance: list[EquivarianceTask] = field(default_factory=list)
    # optimisation
    epochs: int = 10
    batch_size: int = 256  # global batch (all processes together)
    shuffle: bool = True  # reshuffle the training set every epoch (false: file order, every epoch)
    optimizer: str = "sgd"  # sgd | lars
    lr: float = 0.06  # base lr; the lr used is lr * batch_size / 256
    final_lr_ratio: float = 0.0  # cosine decays to lr * final_lr_ratio
    warmup_epochs: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    exclude_bias_norm: bool = False  # no weight decay / LARS adaptation for biases and norm parameters
    bias_norm_lr_scale: float = 1.0  # lr multiplier of those (with exclude_bias_norm); Barlow Twins: 0.0048/0.2
    lars_eta: float = 0.001
    lars_clip: bool = False  # LARS trust ratio capped at the lr (solo-learn's clip_lr)
    predictor_fixed_lr: bool = False  # SimSiam: the predictor keeps the initial lr
    # engineering
    precision: str = "auto"  # auto | bf16 | fp16 | fp32
    channels_last: str = "auto"  # auto | true | false
    compile: bool = False
    device: str = "auto"  # auto | cpu | cuda
    workers: int = 4  # DataLoader workers (image folders decoded on the fly)
    num_threads: int = 0  # torch CPU threads (0: torch's default)
    tune_threads: bool = False  # with num_threads=0 on the CPU: choose the count by timing steps (ThreadTuner)
    seed: int = 0
    knn_every: int = 1  # kNN monitor every N epochs (0: off)
    knn_k: int = 200
    knn_t: float = 0.1
    knn_subset: int = 0  # kNN monitor on this many images per class of train and test/val (0: all)
    online_probe: bool = True  # online linear probe on detached features (where labels exist)
    log_every: int = 50  # steps between reads of the losses (progress bar, non-finite check, logger)
    logger: str = "none"  # none | tensorboard | wandb (essl[tensorboard], essl[wandb]; essl/training/loggers.py)
    # checkpoints (docs/long-runs.md)
    checkpoint_every: int = 0  # also write checkpoint.pt every N steps (0: at the end of each epoch only)
    keep_checkpoints: list[int] = field(default_factory=list)  # keep RUN/checkpoints/epoch_NNNN.pt after these epochs
    keep_every: int = 0  # … and after every K-th epoch (0: off)
    notes: str = ""

    def validate(self) -> None:
        """Every field against its rule in :data:`essl.training.validation.CONFIG_RULES`, then the rules between
        fields; raises :class:`EsslError` naming the setting."""
        check_config(self)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any) -> Any:
    """A value from YAML or an override → the type of setting ``name`` (its rule in the validation table)."""
    value = CONFIG_RULES[name].coerce(name, value)
    if name != "equivariance":
        return value
    tasks, keys = [], [f.name for f in dataclasses.fields(EquivarianceTask)]
    for entry in value:
        if isinstance(entry, EquivarianceTask):
            tasks.append(entry)
            continue
        if not isinstance(entry, dict):
            raise EsslError(f"equivariance entry {entry!r} must be a mapping with {', '.join(keys)}.")
        unknown = set(entry) - set(keys)
        if unknown:
            raise EsslError(f"unknown equivariance key(s) {sorted(unknown)}; use {', '.join(keys)}.")
        tasks.append(EquivarianceTask(**{k: TASK_RULES[k].coerce(f"equivariance {k}", v) for k, v in entry.items()}))
    return tasks


def config_from_dict(values: dict[str, Any], base: PretrainConfig | None = None) -> PretrainConfig:
    """Build a config from a mapping (unknown keys are an error) on top of ``base`` (defaults if None)."""
    cfg = dataclasses.replace(base) if base is not None else PretrainConfig()
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    for key, value in values.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3, cutoff=0.6) or [
                n for n in fields if n.startswith(key[:3])
            ]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise EsslError(f"Unknown setting {key!r}.{hint} `essl presets --show NAME` lists a preset's settings.")
        setattr(cfg, key, _coerce(key, value))
    cfg.validate()
    return cfg


# ------------------------------------------------------------------------------- resuming with changed settings
# Settings a resumed run may change freely: where the data is, how it is read, when to evaluate, log and
# checkpoint, and how long to train (the cosine schedule is recomputed for the new length).
RESUME_SAFE = frozenset(
    {
        "epochs",
        "data_root",
        "workers",
        "num_threads",
        "tune_threads",
        "device",
        "knn_every",
        "knn_k",
        "knn_t",
        "log_every",
        "logger",
        "checkpoint_every",
        "keep_checkpoints",
        "keep_every",
        "notes",
    }
)
# Settings that change the optimisation from here on; allowed with --allow-change.
RESUME_WITH_ALLOW = frozenset({"lr", "precision", "compile", "channels_last"})
_REFUSED_WHY = {
    "model": "the checkpoint's weights and optimizer state belong to the model it was written with",
    "data": "the data order, steps per epoch and schedule position of the run depend on it",
    "objective": "it changes the objective the run has been optimising",
}
_REFUSED_KIND = {
    **dict.fromkeys(
        ("backbone", "projector", "predictor_hidden", "method", "equivariance", "optimizer", "init_from"), "model"
    ),
    **dict.fromkeys(("dataset", "image_size", "channels", "subset", "batch_size", "seed"), "data"),
}


def resume_changes(old: PretrainConfig, new: PretrainConfig, allow_change: bool = False) -> dict[str, list[Any]]:
    """``{setting: [old, new]}`` for every setting ``new`` changes, or an :class:`EsslError` naming each refused
    change and why (``essl pretrain --resume RUN key=value``)."""
    a, b = old.to_dict(), new.to_dict()
    changed = {k: [a[k], b[k]] for k in a if a[k] != b[k]}
    refused = [
        f"{k} ({_REFUSED_WHY[_REFUSED_KIND.get(k, 'objective')]})"
        for k in changed
        if k not in RESUME_SAFE | RESUME_WITH_ALLOW
    ]
    if refused:
        raise EsslError(
            f"A resumed run cannot change {'; '.join(refused)}. Start a new run instead, warm-started "
            f"from this one with init_from=RUN_DIR. Settings a resume may change: "
            f"{', '.join(sorted(RESUME_SAFE))}; with --allow-change also {', '.join(sorted(RESUME_WITH_ALLOW))}."
        )
    needs = sorted(k for k in changed if k in RESUME_WITH_ALLOW)
    if needs and not allow_change:
        raise EsslError(
            f"Changing {', '.join(needs)} in a resumed run changes its optimisation from here on (the "
            f"run no longer matches its settings from the start; the change is recorded in the run "
            f"folder). Pass --allow-change to do it."
        )
    return changed


def nonfinite_settings(cfg: PretrainConfig) -> list[str]:
    """Names of the numeric settings that are nan or ±inf (a non-finite loss then comes from them)."""
    bad = [f"{k}={v}" for k, v in dataclasses.asdict(cfg).items() if isinstance(v, float) and not math.isfinite(v)]
    bad += [f"equivariance weight of {t.group}={t.weight}" for t in cfg.equivariance if not math.isfinite(t.weight)]
    return bad


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise EsslError(
            f"Unknown preset {name!r}. Available presets: {', '.join(list_presets())} "
            f"(or give the path of a .yaml file)."
        )
    return path


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise EsslError(f"Cannot read {path}: {exc}") from None
    if not isinstance(data, dict):
        raise EsslError(f"{path} must hold a mapping of settings, found {type(data).__name__}.")
    return data


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lr=0.1", "views=mnist,mnist"]`` → ``{"lr": 0.1, "views": "mnist,mnist"}`` (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise EsslError(f"Override {item!r} must look like key=value, e.g. epochs=5.")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key.strip()] = raw
    return out


def load_config(preset: str, overrides: list[str] | None = None) -> PretrainConfig:
    """Preset (name or path) + ``key=value`` overrides → validated config."""
    values = read_yaml(preset_path(preset))
    values.update(parse_overrides(overrides or []))
    return config_from_dict(values)
