"""Pretraining configuration: one flat dataclass, filled from a preset file plus ``key=value`` overrides.

Presets are YAML files in ``essl/presets/`` (or any path). There is no inheritance between presets: each file
states every setting that differs from the defaults below, with its source.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from essl.errors import EsslError
from essl.groups import make_group
from essl.objectives.equivariance import PREDICTION_LOSSES

PRESET_DIR = Path(__file__).resolve().parent.parent / "presets"
METHODS = ("simclr", "simsiam", "barlow_twins", "byol", "vicreg", "mocov3")
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
    view: str = "cifar_small"
    head: str = "cifar_simclr"
    samples: int = 0
    relative: bool = False
    loss: str = "xent"


@dataclass
class PretrainConfig:
    # data
    dataset: str = "mnist5k"
    data_root: str | None = None
    image_size: int = 32                  # image folders only: decode size
    subset: int = 0                       # train on a seeded, class-stratified subset of this many images (0: all)
    # model
    backbone: str = "small_cnn"
    projector: str = "small"
    predictor_hidden: int = 512           # predictor width (SimSiam, BYOL, MoCo v3)
    # objective
    method: str = "simclr"
    temperature: float = 0.5
    full_nt_xent: bool = False            # SimCLR with 2N-2 negatives instead of the cross-view InfoNCE
    barlow_lambda: float = 0.0051
    vicreg_sim: float = 25.0              # VICReg weights λ (invariance), μ (variance), ν (covariance)
    vicreg_var: float = 25.0
    vicreg_cov: float = 1.0
    target_momentum: float = 0.99         # BYOL / MoCo v3: EMA momentum τ of the target network at the first step
    target_momentum_final: float = 1.0    # ... raised to this by a cosine schedule over training
    views: list[str] = field(default_factory=lambda: ["mnist", "mnist"])
    invariances: list[str] = field(default_factory=list)       # groups applied at random to the SSL views
    equivariance: list[EquivarianceTask] = field(default_factory=list)
    # optimisation
    epochs: int = 10
    batch_size: int = 256                 # global batch (all processes together)
    shuffle: bool = True                  # reshuffle the training set every epoch (false: file order, every epoch)
    optimizer: str = "sgd"                # sgd | lars
    lr: float = 0.06                      # base lr; the lr used is lr * batch_size / 256
    final_lr_ratio: float = 0.0           # cosine decays to lr * final_lr_ratio
    warmup_epochs: float = 0.0
    weight_decay: float = 5e-4
    momentum: float = 0.9
    exclude_bias_norm: bool = False       # no weight decay / LARS adaptation for biases and norm parameters
    bias_norm_lr_scale: float = 1.0       # lr multiplier of those (with exclude_bias_norm); Barlow Twins: 0.0048/0.2
    lars_eta: float = 0.001
    lars_clip: bool = False               # LARS trust ratio capped at the lr (solo-learn's clip_lr)
    predictor_fixed_lr: bool = False      # SimSiam: the predictor keeps the initial lr
    # engineering
    precision: str = "auto"               # auto | bf16 | fp16 | fp32
    channels_last: str = "auto"           # auto | true | false
    compile: bool = False
    device: str = "auto"                  # auto | cpu | cuda
    workers: int = 4                      # DataLoader workers (image folders decoded on the fly)
    num_threads: int = 0                  # torch CPU threads (0: torch's default)
    seed: int = 0
    knn_every: int = 1                    # kNN monitor every N epochs (0: off)
    knn_k: int = 200
    knn_t: float = 0.1
    knn_subset: int = 0                   # kNN monitor on this many images per class of train and test/val (0: all)
    online_probe: bool = True             # online linear probe on detached features (where labels exist)
    notes: str = ""

    def validate(self) -> None:
        if self.method not in METHODS:
            raise EsslError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if self.optimizer not in ("sgd", "lars"):
            raise EsslError(f"optimizer must be 'sgd' or 'lars', got {self.optimizer!r}.")
        if self.precision not in ("auto", "bf16", "fp16", "fp32"):
            raise EsslError(f"precision must be auto, bf16, fp16 or fp32, got {self.precision!r}.")
        if str(self.channels_last).lower() not in ("auto", "true", "false"):
            raise EsslError(f"channels_last must be auto, true or false, got {self.channels_last!r}.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise EsslError(f"device must be auto, cpu or cuda, got {self.device!r}.")
        if self.knn_subset < 0:
            raise EsslError(f"knn_subset must be >= 0 images per class (0: every image), got {self.knn_subset}.")
        if self.subset < 0:
            raise EsslError(f"subset must be >= 0 (0 means the whole training set), got {self.subset}.")
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise EsslError(f"{name} must be at least 1, got {getattr(self, name)}.")
        if len(self.views) != 2:
            raise EsslError(f"views must name exactly two view recipes, got {self.views!r}.")
        if self.lr <= 0 or self.temperature <= 0:
            raise EsslError("lr and temperature must be positive.")
        if self.bias_norm_lr_scale <= 0:
            raise EsslError(f"bias_norm_lr_scale must be positive, got {self.bias_norm_lr_scale}.")
        if self.bias_norm_lr_scale != 1.0 and not self.exclude_bias_norm:
            raise EsslError("bias_norm_lr_scale applies to biases and norm parameters in their own group: set "
                            "exclude_bias_norm: true as well.")
        if self.warmup_epochs < 0:
            raise EsslError(f"warmup_epochs must be >= 0, got {self.warmup_epochs}.")
        if not 0.0 <= self.target_momentum <= self.target_momentum_final <= 1.0:
            raise EsslError(f"the target-network momentum must satisfy 0 <= target_momentum <= target_momentum_final "
                            f"<= 1 (BYOL and MoCo v3 use 0.99 rising to 1.0), got {self.target_momentum} and "
                            f"{self.target_momentum_final}.")
        if min(self.vicreg_sim, self.vicreg_var, self.vicreg_cov) < 0:
            raise EsslError(f"the VICReg weights vicreg_sim, vicreg_var, vicreg_cov must be >= 0 (the paper: 25, 25, "
                            f"1), got {self.vicreg_sim}, {self.vicreg_var}, {self.vicreg_cov}.")
        names = [t.group for t in self.equivariance]
        if len(set(names)) != len(names):
            raise EsslError(f"each predicted group may appear once in equivariance, got {names}.")
        for t in self.equivariance:
            if not make_group(t.group).finite:  # an unknown name raises with the list of known groups
                raise EsslError(f"{t.group!r} is a continuous transformation: it can be an invariance but not a "
                                f"predicted group (equivariance needs finitely many elements to predict).")
            if t.weight <= 0:
                raise EsslError(f"the weight (λ) of the predicted group {t.group!r} must be positive, got {t.weight}.")
            if t.samples < 0:
                raise EsslError(f"samples of the predicted group {t.group!r} must be >= 0 (0: every element), got "
                                f"{t.samples}.")
            if t.loss not in PREDICTION_LOSSES:
                raise EsslError(f"loss of the predicted group {t.group!r} must be one of {', '.join(PREDICTION_LOSSES)}"
                                f", got {t.loss!r}.")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _coerce(name: str, value: Any, default: Any, annotation: str) -> Any:
    if name == "equivariance":
        if not isinstance(value, list):
            raise EsslError("equivariance must be a list of {group, weight, view, head[, samples]} entries (or []).")
        tasks, defaults = [], EquivarianceTask()
        for entry in value:
            if isinstance(entry, EquivarianceTask):
                tasks.append(entry)
                continue
            if not isinstance(entry, dict):
                raise EsslError(f"equivariance entry {entry!r} must be a mapping with group, weight, view, head.")
            unknown = set(entry) - set(dataclasses.asdict(defaults))
            if unknown:
                raise EsslError(f"unknown equivariance key(s) {sorted(unknown)}; use group, weight, view, head, "
                                f"samples.")
            tasks.append(EquivarianceTask(**{k: _coerce(f"equivariance {k}", v, getattr(defaults, k), "")
                                             for k, v in entry.items()}))
        return tasks
    if value is None:
        if "None" in annotation:
            return None
        raise EsslError(f"{name} cannot be empty.")
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise EsslError(f"{name} must be true or false, got {value!r}.")
    if isinstance(default, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise EsslError(f"{name} must be a list, got {value!r}.")
        return [str(v) for v in value]
    if isinstance(default, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(default, int) and isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(default, float) and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if isinstance(default, str) or default is None:
        return str(value)
    raise EsslError(f"{name} expects a value like {default!r}, got {value!r}.")


def config_from_dict(values: dict[str, Any], base: PretrainConfig | None = None) -> PretrainConfig:
    """Build a config from a mapping (unknown keys are an error) on top of ``base`` (defaults if None)."""
    cfg = dataclasses.replace(base) if base is not None else PretrainConfig()
    fields = {f.name: f for f in dataclasses.fields(PretrainConfig)}
    for key, value in values.items():
        if key not in fields:
            close = [n for n in fields if n.startswith(key[:3])]
            hint = f" Did you mean {', '.join(close)}?" if close else ""
            raise EsslError(f"Unknown setting {key!r}.{hint} `essl presets --show NAME` lists a preset's settings.")
        setattr(cfg, key, _coerce(key, value, getattr(PretrainConfig(), key), str(fields[key].type)))
    cfg.validate()
    return cfg


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise EsslError(f"Unknown preset {name!r}. Available presets: {', '.join(list_presets())} "
                        f"(or give the path of a .yaml file).")
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
