"""One table of validation rules: every pretraining setting and every numeric command-line option.

A bad value is refused with an :class:`EsslError` that names the setting and says what it must be, before any data
is loaded or any file written:

- :data:`CONFIG_RULES`: one :class:`Rule` per field of :class:`essl.training.config.PretrainConfig` (type, range,
  finiteness, known names), :data:`TASK_RULES` for the keys of an ``equivariance`` entry, and :func:`cross_checks`
  for rules that involve several fields (``samples`` at most the group's order, ``bias_norm_lr_scale`` only
  with ``exclude_bias_norm`` ...). The one rule that needs the number of training images (``subset``) is
  :func:`essl.data.sources.check_subset`, applied once the data are loaded and before the run folder is written.
- :data:`OPTION_RULES`: the options of every command (``essl knn --k``, ``essl probe --weight-decay``,
  ``essl phc label --nbands`` ...), keyed by argparse destination (``"COMMAND dest"`` where one name means different
  things in different commands); :func:`check_options` applies them to parsed arguments (``essl.cli.main`` does, for
  every command). A test asserts that every config field and every int/float option has a rule here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any
from collections.abc import Callable, Iterable

from essl.augmentation.views import resolve_view
from essl.catalog import CHECKPOINT_PROTOCOLS, LOGGERS, PRECISIONS
from essl.data.datasets import CHANNEL_DATASETS, DATASETS
from essl.errors import EsslError
from essl.groups import make_group
from essl.models import BACKBONES
from essl.models.heads import HEADS, PROJECTORS
from essl.objectives.equivariance import PREDICTION_LOSSES

SEED_MAX = 2**32 - 1  # numpy's RandomState and torch's generators both take seeds in [0, 2**32)


@dataclass(frozen=True)
class Rule:
    """What one value may be: ``kind`` (int, float, bool, str, names: a list of str, tasks: equivariance entries), an
    inclusive or exclusive range, a set of known names, and ``note``, said in the message after the value."""

    kind: str
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    choices: tuple[str, ...] | Callable[[], Iterable[str]] | None = None
    optional: bool = False  # None is allowed (e.g. data_root of mnist5k)
    item: Callable[[str, str], None] | None = None  # extra check of each name (raises EsslError)
    length: int | None = None  # names: exactly this many
    note: str = ""

    def describe(self) -> str:
        words = {
            "int": "a whole number",
            "float": "a finite number",
            "bool": "true or false",
            "str": "a text",
            "names": "a list of names",
            "tasks": "a list of entries",
            "views": "a list of view recipes",
            "view": "a view recipe",
            "epochs": "a list of epochs",
        }[self.kind]
        low = f"[{_num(self.ge)}" if self.ge is not None else f"({_num(self.gt)}" if self.gt is not None else None
        if low is not None and self.le is not None:
            return f"{words} in {low}, {_num(self.le)}]"
        bounds = [f"{op} {_num(v)}" for op, v in ((">=", self.ge), (">", self.gt), ("<=", self.le)) if v is not None]
        return " ".join([words, *bounds])

    def coerce(self, name: str, value: Any) -> Any:
        """A value from YAML or a ``key=value`` override → the field's type (an EsslError if it has another)."""
        if value is None:
            if self.optional:
                return None
            raise EsslError(f"{name} cannot be empty; it must be {self.describe()}{self._note()}.")
        if self.kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "false"):
                return str(value).lower() == "true"
        elif self.kind == "int":
            if isinstance(value, int) and not isinstance(value, bool):
                return value
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                return int(value)
        elif self.kind == "float":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return float(value)
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
        elif self.kind == "str":
            if isinstance(value, bool):  # YAML reads `channels_last: false` as a boolean
                return str(value).lower()
            if not isinstance(value, (list, dict)):
                return str(value)
        elif self.kind == "names":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
                return [str(v) for v in value]
        elif self.kind == "views":
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(isinstance(v, (str, dict)) for v in value):
                return value
        elif self.kind == "view":
            if isinstance(value, (str, dict)):
                return value
        elif self.kind == "epochs":
            if isinstance(value, int) and not isinstance(value, bool):
                value = [value]
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) or isinstance(v, str) and v.isdigit() for v in value
            ):
                return sorted({int(v) for v in value})
        elif self.kind == "tasks":
            if isinstance(value, list):
                return value
        raise EsslError(f"{name} must be {self.describe()}{self._note()}; got {value!r}.")

    def check(self, name: str, value: Any) -> None:
        """Range, finiteness and known names of a value of the right type."""
        if value is None and self.optional:
            return
        if self.kind in ("int", "float"):
            bad = (
                (self.kind == "float" and not math.isfinite(value))
                or (self.ge is not None and not value >= self.ge)
                or (self.gt is not None and not value > self.gt)
                or (self.le is not None and not value <= self.le)
            )
            if bad:
                raise EsslError(f"{name} must be {self.describe()}{self._note()}; got {_num(value)}.")
        if self.kind == "epochs" and any(v < 1 for v in value):
            raise EsslError(f"{name} lists epochs, whole numbers >= 1{self._note()}; got {value!r}.")
        names = value if self.kind in ("names", "views") else [value] if self.kind in ("str", "view") else []
        if self.kind in ("names", "views") and self.length is not None and len(value) != self.length:
            raise EsslError(f"{name} must name exactly {self.length}{self._note()}; got {value!r}.")
        for v in names:
            if self.choices is not None:
                known = tuple(self.choices() if callable(self.choices) else self.choices)
                if v not in known:
                    raise EsslError(f"{name} must be one of {', '.join(known)}; got {v!r}.")
            if self.item is not None:
                self.item(name, v)

    def _note(self) -> str:
        return f" ({self.note})" if self.note else ""


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def Int(ge: int | None = None, le: int | None = None, note: str = "", optional: bool = False) -> Rule:
    return Rule("int", ge=ge, le=le, note=note, optional=optional)


def Float(
    ge: float | None = None, gt: float | None = None, le: float | None = None, note: str = "", optional: bool = False
) -> Rule:
    return Rule("float", ge=ge, gt=gt, le=le, note=note, optional=optional)


def Choice(*choices: str) -> Rule:
    return Rule("str", choices=choices)


def Seed(optional: bool = False) -> Rule:
    return Int(ge=0, le=SEED_MAX, note="a seed", optional=optional)


BOOL = Rule("bool")


# -------------------------------------------------------------------------------------------- named things
def check_view(name: str, value: Any) -> None:
    """A view setting: a recipe, ``recipe@SIZE`` (SIZE >= 1 pixel) or a mapping overriding recipe fields."""
    try:
        resolve_view(value)
    except EsslError as exc:
        raise EsslError(f"{name}: {exc}") from None


def check_backbone(name: str, value: str) -> None:
    """A built-in backbone, or ``package.module:function`` (checked when the model is built, before any write)."""
    module, sep, attr = value.partition(":")
    if value not in BACKBONES and not (sep and module and attr):
        raise EsslError(
            f"{name} must be one of {', '.join(BACKBONES)}, or your own as package.module:function; got {value!r}."
        )


def check_group(name: str, value: str) -> None:
    """A transformation group (or product ``a*b``); unknown names raise with the list of known groups."""
    try:
        make_group(value)
    except EsslError as exc:
        raise EsslError(f"{name}: {exc}") from None


# ------------------------------------------------------------------------------------- the pretraining config
METHODS = ("simclr", "simsiam", "barlow_twins", "byol", "vicreg", "mocov3")

CONFIG_RULES: dict[str, Rule] = {
    # data
    "dataset": Choice(*DATASETS),
    "data_root": Rule("str", optional=True),
    "image_size": Int(ge=8, note="pixels; the decode size of image folders"),
    "channels": Int(ge=0, le=3, note="image folders: 1 greyscale, 3 RGB, 0 RGB"),
    "subset": Int(ge=0, note="0 trains on the whole training set"),
    # model
    "backbone": Rule("str", item=check_backbone),
    "projector": Choice(*PROJECTORS),
    "predictor_hidden": Int(ge=1, note="width of the SimSiam predictor"),
    # objective
    "method": Choice(*METHODS),
    "temperature": Float(gt=0),
    "full_nt_xent": BOOL,
    "barlow_lambda": Float(gt=0),
    "vicreg_sim": Float(ge=0, note="VICReg invariance weight"),
    "vicreg_var": Float(ge=0, note="VICReg variance weight"),
    "vicreg_cov": Float(ge=0, note="VICReg covariance weight"),
    "target_momentum": Float(ge=0, le=1, note="EMA momentum of the target network at the first step"),
    "target_momentum_final": Float(ge=0, le=1, note="EMA momentum at the end of training"),
    "views": Rule("views", length=2, item=check_view, note="two view recipes, e.g. mnist,mnist or cifar@24,cifar"),
    "invariances": Rule("names", item=check_group, note="transformation groups applied to the SSL views"),
    "equivariance": Rule("tasks", note="{group, weight, view, head[, samples, relative, loss]} mappings, or []"),
    # optimisation
    "epochs": Int(ge=1),
    "batch_size": Int(ge=2, note="a contrastive batch needs at least two images"),
    "shuffle": BOOL,
    "optimizer": Choice("sgd", "lars"),
    "lr": Float(gt=0),
    "final_lr_ratio": Float(ge=0, le=1, note="the cosine schedule ends at lr × final_lr_ratio"),
    "warmup_epochs": Float(ge=0),
    "weight_decay": Float(ge=0),
    "momentum": Float(ge=0, le=1),
    "exclude_bias_norm": BOOL,
    "bias_norm_lr_scale": Float(gt=0),
    "lars_eta": Float(gt=0),
    "lars_clip": BOOL,
    "predictor_fixed_lr": BOOL,
    # engineering
    "precision": Choice(*PRECISIONS),
    "channels_last": Choice("auto", "true", "false"),
    "compile": BOOL,
    "device": Choice("auto", "cpu", "cuda"),
    "workers": Int(ge=0, note="DataLoader worker processes; 0 decodes in the main process"),
    "num_threads": Int(ge=0, note="0 keeps torch's default"),
    "tune_threads": BOOL,
    "seed": Seed(),
    "knn_every": Int(ge=0, note="0 turns the kNN monitor off"),
    "knn_k": Int(ge=1, note="neighbours of the kNN monitor"),
    "knn_t": Float(gt=0, note="temperature of the kNN monitor"),
    "knn_subset": Int(ge=0, note="images per class in the kNN monitor; 0: all"),
    "online_probe": BOOL,
    "notes": Rule("str"),
    # warm starts, checkpoints and logging (docs/long-runs.md)
    "init_from": Rule("str", optional=True, note="a run folder, an exported backbone or a released checkpoint"),
    "barlow_official_gpus": Int(ge=0, note="0: the exact gradient; W: the official code's on W GPUs"),
    "log_every": Int(ge=1, note="steps between reads of the losses"),
    "logger": Choice(*LOGGERS),
    "checkpoint_every": Int(ge=0, note="steps; 0 writes checkpoint.pt at the end of each epoch only"),
    "keep_checkpoints": Rule("epochs", note="e.g. [100, 200]"),
    "keep_every": Int(ge=0, note="0: off"),
}

#: The keys of one ``equivariance`` entry (:class:`essl.training.config.EquivarianceTask`).
TASK_RULES: dict[str, Rule] = {
    "group": Rule("str", item=check_group),
    "weight": Float(gt=0, note="λ, the weight of the prediction loss"),
    "view": Rule("view", item=check_view),
    "head": Choice(*HEADS),
    "samples": Int(ge=0, note="0 predicts every element; r > 0 predicts r drawn elements per crop"),
    "relative": BOOL,
    "loss": Choice(*PREDICTION_LOSSES),
}


def check_config(cfg: Any) -> None:
    """Every field against its rule, then the rules between fields. ``cfg`` is a ``PretrainConfig``."""
    for f in fields(cfg):
        rule = CONFIG_RULES.get(f.name)
        if rule is None:
            raise RuntimeError(f"PretrainConfig.{f.name} has no rule in essl/training/validation.py CONFIG_RULES")
        rule.check(f.name, getattr(cfg, f.name))
    for task in cfg.equivariance:
        for f in fields(task):
            TASK_RULES[f.name].check(f"equivariance {task.group!r}: {f.name}", getattr(task, f.name))
    cross_checks(cfg)


def cross_checks(cfg: Any) -> None:
    """Rules between fields (known before any data is loaded)."""
    if cfg.channels == 2:
        raise EsslError("channels must be 1 (greyscale) or 3 (RGB) (0: RGB); got 2.")
    if cfg.channels and cfg.dataset not in CHANNEL_DATASETS:
        raise EsslError(
            f"channels applies to image folders (dataset={' or '.join(CHANNEL_DATASETS)}); {cfg.dataset!r} has its "
            f"own channels. Remove channels={cfg.channels}."
        )
    if cfg.barlow_official_gpus and cfg.method != "barlow_twins":
        raise EsslError("barlow_official_gpus applies to method=barlow_twins only.")
    if cfg.bias_norm_lr_scale != 1.0 and not cfg.exclude_bias_norm:
        raise EsslError(
            "bias_norm_lr_scale applies to biases and norm parameters in their own group: set "
            "exclude_bias_norm: true as well."
        )
    if cfg.target_momentum > cfg.target_momentum_final:
        raise EsslError(
            f"target_momentum ({cfg.target_momentum:g}) must not exceed target_momentum_final "
            f"({cfg.target_momentum_final:g}); BYOL and MoCo v3 use 0.99 rising to 1.0."
        )
    names = [t.group for t in cfg.equivariance]
    if len(set(names)) != len(names):
        raise EsslError(f"each predicted group may appear once in equivariance, got {names}.")
    for t in cfg.equivariance:
        group = make_group(t.group)
        if not group.finite:
            raise EsslError(
                f"{t.group!r} is a continuous transformation: it can be an invariance but not a "
                f"predicted group (equivariance needs finitely many elements to predict)."
            )
        if t.samples > group.order:
            raise EsslError(
                f"equivariance {t.group!r}: samples must be at most the group's order {group.order} "
                f"(0 predicts every element); got {t.samples}."
            )


# ------------------------------------------------------------------------------------ command-line options
#: argparse destination → rule; "COMMAND dest" where a name means something else in that command.
OPTION_RULES: dict[str, Rule] = {
    # evaluation (knn, probe, finetune, diagnose)
    "k": Int(ge=1, optional=True, note="neighbours"),
    "t": Float(gt=0, note="temperature of the vote weights exp(sim/t)"),
    "threads": Int(ge=0, note="0 keeps torch's default"),
    "image_size": Int(ge=8, optional=True, note="pixels"),
    "epochs": Int(ge=1, optional=True),
    "repeats": Int(ge=1, optional=True),
    "batch_size": Int(ge=1, optional=True),
    "label_fraction": Float(gt=0, le=1, optional=True, note="e.g. 0.01 for 1% of the labels"),
    "seed": Seed(optional=True),
    "max_train": Int(ge=1),
    "max_test": Int(ge=1),
    # demo
    "subset": Int(ge=0, note="0: all training images"),
    # sweep
    "sweep seeds": Int(ge=1, note="number of seeds 0..N-1"),
    "weight": Float(gt=0, note="λ"),
    "pred_samples": Int(ge=0, note="0: every element of the group"),
    # photonics
    "seeds": Seed(optional=True),  # phc finetune / experiment: a list of seeds, each checked
    "n": Int(ge=1, optional=True),
    "start_index": Int(ge=1, optional=True, note="h5 indices are 1-based"),
    "supersample": Int(ge=1),
    "shard_size": Int(ge=0, note="0 writes one shard"),
    "pw_cutoff": Float(ge=1, note="plane-wave cutoff |G| <= M"),
    "nbands": Int(ge=1),
    "nk": Int(ge=1),
    "workers": Int(ge=0, note="0 decodes in the main process"),
    "phc generate workers": Int(ge=1),
    "phc label workers": Int(ge=1),
    "expect_start": Int(ge=1, optional=True),
    "expect_n": Int(ge=1, optional=True),
    "n_train": Int(ge=1, optional=True),
    "lr": Float(gt=0),
    "weight_decay": Float(ge=0, optional=True),
    "eval_batch": Int(ge=1),
    "subset_seed": Seed(),
    "pretrain_epochs": Int(ge=1, optional=True),
    "finetune_epochs": Int(ge=1, optional=True),
    "protocol": Rule("str", choices=CHECKPOINT_PROTOCOLS, optional=True, note="checkpoint selection"),
}


def option_rule(command: str, dest: str) -> Rule | None:
    return OPTION_RULES.get(f"{command} {dest}", OPTION_RULES.get(dest))


def check_options(command: str, args: dict[str, Any]) -> None:
    """Apply :data:`OPTION_RULES` to the parsed options of ``command`` (e.g. ``"knn"``, ``"phc label"``)."""
    for dest, value in args.items():
        rule = option_rule(command, dest)
        if rule is None or rule.kind not in ("int", "float") or isinstance(value, bool):
            continue
        flag = "--" + dest.replace("_", "-")
        for v in value if isinstance(value, list) else [value]:
            if v is not None and not isinstance(v, (int, float)):
                continue  # not a number (e.g. a path named like an option): argparse's type checks it
            rule.check(flag, v)
