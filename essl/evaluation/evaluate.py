"""Evaluate an encoder with a named protocol and write the machine-readable result.

Each ``evaluate_*`` function takes an :class:`~essl.evaluation.loading.EvalTarget` (or a run folder), runs one
evaluation, writes ``<out>/eval/<name>.json`` with :func:`~essl.runs.write_result` and returns the
same record. Every record states:

- ``evaluation`` (knn | linear_probe | finetune | diagnostics) and ``protocol`` (its name, source and every
  setting, plus ``adapted``/``overrides``: what differs from the paper and why);
- ``source`` (the encoder: run folder, method, dataset, epochs, predicted groups; or the released file),
  ``checkpoint`` (path) and ``checkpoint_info`` (path, epoch, SHA-256);
- ``data`` (splits, sizes, label fraction), ``seeds``, ``device``/``precision``, ``runtime_s``;
- the numbers (``top1`` in %, ``top1_std`` over repeats, per-run details).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any
from collections.abc import Callable

import numpy as np
import torch

from essl.data import ImageData
from essl.errors import EsslError
from essl.evaluation.classifier import run_protocol
from essl.evaluation.diagnostics import diagnose
from essl.training.features import extract_features
from essl.training.knn import knn_accuracy
from essl.evaluation.linear import fit_logistic_regression, linear_probe_accuracy, predict_logistic_regression
from essl.evaluation.loading import EvalTarget, load_target
from essl.evaluation.catalog import DIAGNOSTICS_MAX_TEST, DIAGNOSTICS_MAX_TRAIN, LBFGS_WEIGHT_DECAY, OTHER_PROTOCOLS
from essl.evaluation.protocols import adapt_protocol, get_protocol, result_name, stratified_subset
from essl.evaluation.streamed import (
    StreamedSplit,
    cached_features,
    diagnose_streamed,
    dist_info,
    knn_accuracy_chunked,
    label_list_subset,
    train_classifier_streamed,
)
from essl.groups import make_group
from essl.runs import write_result
from essl.runtime import resolve_runtime
from essl.training.validation import OPTION_RULES


def as_target(target: EvalTarget | Path | str, data_root: str | None = None) -> EvalTarget:
    return target if isinstance(target, EvalTarget) else load_target(target, data_root=data_root)


def streamed_splits(target: EvalTarget) -> tuple[StreamedSplit, StreamedSplit] | None:
    """``(train, test)`` when the target is read from disk batch by batch (both splits are, or neither)."""
    if isinstance(target.train, StreamedSplit) and isinstance(target.test, StreamedSplit):
        return target.train, target.test
    return None


def memory_splits(target: EvalTarget) -> tuple[ImageData, ImageData]:
    """``(train, test)`` of a target held in memory."""
    if isinstance(target.train, ImageData) and isinstance(target.test, ImageData):
        return target.train, target.test
    raise TypeError(f"{target.dataset}: the train and test splits are not both in memory")


def _data_record(
    target: EvalTarget,
    n_train: int,
    label_fraction: float | None,
    subset_seed: int | None,
    label_list: Path | str | None = None,
) -> dict:
    if label_list:
        subset = f"the images named in {label_list}"
    elif label_fraction is not None:
        subset = f"stratified: max(1, round({label_fraction}·n_c)) per class, seed {subset_seed}"
    else:
        subset = None
    record = {
        "dataset": target.dataset,
        "train": target.train.name,
        "test": target.test.name,
        "train_images": len(target.train),
        "train_images_used": n_train,
        "test_images": len(target.test),
        "image_size": target.train.image_size,
        "channels": target.train.channels,
        "label_fraction": label_fraction,
        "label_subset": subset,
        "streamed": target.streamed,
    }
    streamed = streamed_splits(target)
    if streamed is not None:
        train = streamed[0]
        record["transform"] = {
            "working_size": train.size,
            "eval": f"Resize({train.size}) + CenterCrop({train.image_size})",
            "train_crops": "from the whole image",
        }
    return record


def _write(target: EvalTarget, name: str, result: dict[str, Any]) -> dict[str, Any]:
    """Write the result file (on the main process only, under torchrun) and return the record."""
    if dist_info()[0] == 0:
        result["result_file"] = str(write_result(target.out_dir, name, result))
    return result


def _user_settings(settings: dict[str, tuple[Any, Any]]) -> dict[str, dict[str, Any]]:
    """``{name: (default, used)}`` → the protocol record's ``overrides`` entry for every setting the user changed
    (part of the result's file name through :func:`result_name`, so it never replaces the default result)."""
    return {
        key: {"protocol": default, "used": used, "why": "user setting"}
        for key, (default, used) in settings.items()
        if used != default
    }


def _name(target: EvalTarget, name: str) -> str:
    """Result name, with ``-on-<dataset>`` when a run is evaluated on other data than it was pretrained on and
    ``-epoch_NNNN`` when a kept milestone is evaluated instead of the last checkpoint."""
    other, milestone = target.source.get("other_data"), target.source.get("milestone")
    return name + (f"-on-{other}" if other else "") + (f"-{milestone}" if milestone else "")


def _record(
    target: EvalTarget, evaluation: str, protocol: dict, data: dict, seeds: dict, runtime: dict, numbers: dict
) -> dict[str, Any]:
    return {
        "evaluation": evaluation,
        "protocol": protocol,
        "source": target.source,
        "checkpoint": target.checkpoint["path"],
        "checkpoint_info": target.checkpoint,
        "data": data,
        "seeds": {**target.seeds, **seeds},
        **runtime,
        **numbers,
    }


def _label_subset(
    target: EvalTarget, label_fraction: float | None, seed: int, label_list: Path | str | None = None
) -> tuple[torch.Tensor | None, float | None]:
    """Indices of the few-label training subset (None: all labels) and the fraction of labels it holds."""
    if label_list is not None:
        if label_fraction is not None:
            raise EsslError("Give either --label-fraction or --label-list, not both.")
        if target.train_files is None:
            raise EsslError(
                f"--label-list names image files; dataset {target.dataset!r} is not an image folder. "
                f"Use --label-fraction instead."
            )
        index = label_list_subset(target.train_files, label_list)
        return index, len(index) / len(target.train)
    if label_fraction is None:
        return None, None
    index = stratified_subset(target.train.require_labels(), label_fraction, seed)  # also validates the value
    return (None, None) if label_fraction == 1 else (index, label_fraction)


# ------------------------------------------------------------------------------------------ cached features
def frozen_features(target: EvalTarget, device: str = "cpu", precision: str = "fp32") -> dict[str, Any]:
    """Un-augmented eval-mode features of both splits (the kNN monitor's :func:`extract_features`); for a
    streamed target, float16 memmaps read from (or written to) the on-disk cache ``OUT/eval/cache``."""
    dev, dtype, name = resolve_runtime(device, precision)
    torch.manual_seed(0)
    streamed = streamed_splits(target)
    if streamed is not None:
        cache, sha = target.out_dir / "eval" / "cache", target.checkpoint["sha256"]
        return {
            "train": cached_features(target.backbone, streamed[0], cache, sha, device=dev, dtype=dtype),
            "test": cached_features(target.backbone, streamed[1], cache, sha, device=dev, dtype=dtype),
            "runtime": {"device": str(dev), "precision": name, "feature_cache": str(cache)},
        }
    train, test = memory_splits(target)
    return {
        "train": extract_features(target.backbone, train.images, train.mean, train.std, device=dev, dtype=dtype),
        "test": extract_features(target.backbone, test.images, train.mean, train.std, device=dev, dtype=dtype),
        "runtime": {"device": str(dev), "precision": name},
    }


def evaluate_knn(
    target: EvalTarget | Path | str,
    k: int = 200,
    t: float = 0.1,
    data_root: str | None = None,
    *,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Weighted kNN top-1 (:func:`knn_accuracy`, the same code as the training monitor); result ``knn``."""
    OPTION_RULES["k"].check("--k", k)
    OPTION_RULES["t"].check("--t", t)
    target = as_target(target, data_root)
    t0 = time.perf_counter()
    f = frozen_features(target, device, precision)
    knn = knn_accuracy_chunked if target.streamed else knn_accuracy
    train_labels, test_labels = target.train.require_labels(), target.test.require_labels()
    acc = knn(f["train"], train_labels, f["test"], test_labels, target.train.num_classes, k, t)
    protocol = {
        "name": "knn",
        "kind": "knn",
        "source": OTHER_PROTOCOLS["knn"],
        "k": k,
        "t": t,
        "similarity": "cosine",
        "vote": "exp(sim/t) weighted",
        "bank": "train split, un-augmented",
        "eval": "test split, un-augmented",
        "overrides": {
            key: {"protocol": d, "used": v, "why": "user override"}
            for key, d, v in (("k", 200, k), ("t", 0.1, t))
            if v != d
        },
    }
    result = _record(
        target,
        "knn",
        protocol,
        _data_record(target, len(target.train), None, None),
        {},
        {**f["runtime"], "runtime_s": time.perf_counter() - t0},
        {"top1": acc},
    )
    name = "knn" if not protocol["overrides"] else f"knn-k{k}-t{t:g}"
    return _write(target, _name(target, name), result)


def evaluate_linear_lbfgs(
    target: EvalTarget | Path | str,
    weight_decay: float = LBFGS_WEIGHT_DECAY,
    data_root: str | None = None,
    *,
    label_fraction: float | None = None,
    label_list: Path | str | None = None,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """The fast probe ``linear_lbfgs`` (not the paper's protocol): L-BFGS logistic regression on cached features;
    with ``label_fraction`` (or ``label_list``), fitted on a subset of the train split. Result
    ``linear_lbfgs[...]``."""
    target = as_target(target, data_root)
    t0 = time.perf_counter()
    index, frac = _label_subset(target, label_fraction, seed, label_list)
    f = frozen_features(target, device, precision)
    train_labels, test_labels = target.train.require_labels(), target.test.require_labels()
    labels = train_labels if index is None else train_labels[index]
    if target.streamed:  # the cached float16 memmaps are read in blocks: memory is bounded whatever their size
        params = fit_logistic_regression(
            f["train"],
            labels,
            target.train.num_classes,
            weight_decay,
            rows=None if index is None else index.numpy(),
        )
        hits = 0
        for i in range(0, len(target.test), 8192):
            test_features = torch.from_numpy(np.asarray(f["test"][i : i + 8192], dtype=np.float32))
            pred = predict_logistic_regression(params, test_features).argmax(1)
            hits += int((pred == test_labels[i : i + 8192]).sum().item())
        acc, n_used = 100.0 * hits / len(target.test), len(labels)
    else:
        feats = f["train"] if index is None else f["train"][index]
        acc = linear_probe_accuracy(feats, labels, f["test"], test_labels, target.train.num_classes, weight_decay)
        n_used = len(feats)
    # a weight decay other than the default, or another label-subset seed, gives its own result file and row
    seeded = frac is not None and not label_list
    overrides = _user_settings({"weight_decay": (LBFGS_WEIGHT_DECAY, weight_decay), "seed": (0, seed if seeded else 0)})
    protocol = {
        "name": "linear_lbfgs",
        "kind": "linear_probe",
        "source": OTHER_PROTOCOLS["linear_lbfgs"],
        "solver": "L-BFGS (strong Wolfe), multinomial logistic regression",
        "augmentation": "none",
        "standardised": True,
        "weight_decay": weight_decay,
        "paper_protocol": False,
        "overrides": overrides,
    }
    result = _record(
        target,
        "linear_probe",
        protocol,
        _data_record(target, n_used, frac, seed, label_list),
        {"label_subset": seed} if seeded else {},
        {**f["runtime"], "runtime_s": time.perf_counter() - t0},
        {"top1": acc},
    )
    return _write(
        target, _name(target, result_name("linear_lbfgs", {"overrides": overrides}, frac, label_list)), result
    )


# ------------------------------------------------------------------------------- augmented, trained protocols
def evaluate_protocol(
    target: EvalTarget | Path | str,
    protocol: str = "cifar",
    *,
    epochs: int | None = None,
    repeats: int | None = None,
    batch_size: int | None = None,
    label_fraction: float | None = None,
    label_list: Path | str | None = None,
    seed: int = 0,
    device: str = "auto",
    precision: str = "auto",
    channels_last: bool = True,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A paper linear-probe protocol (``cifar``, ``imagenet_*``) or fine-tuning recipe (``bt_finetune``).

    ``epochs``/``repeats``/``batch_size`` override the protocol (recorded, and part of the result's name);
    ``label_fraction`` trains on a stratified seeded subset (``label_list``: on the images a file names) and tests
    on the full test split. A streamed target runs :func:`~essl.evaluation.streamed.train_classifier_streamed`.
    Result ``probe-<protocol>[...]`` or ``finetune-<protocol>[...]``.
    """
    base = get_protocol(protocol)
    target = as_target(target)
    index, frac = _label_subset(target, label_fraction, seed, label_list)
    train = target.train if index is None else target.train.subset(index)
    used, record = adapt_protocol(
        base,
        target.dataset,
        target.train.image_size,
        epochs=epochs,
        repeats=repeats,
        batch_size=batch_size,
        n_train=len(train),
    )
    dev, dtype, prec = resolve_runtime(device, precision)
    t0 = time.perf_counter()
    numbers = run_protocol(
        target.backbone,
        train,
        target.test,
        used,
        seed=seed,
        device=dev,
        dtype=dtype,
        channels_last=channels_last,
        progress=progress,
        trainer=train_classifier_streamed if target.streamed else None,
    )
    record["overrides"].update(_user_settings({"seed": (0, seed)}))  # another seed: its own file and row
    proto = {
        **base.to_dict(),
        "used": used.to_dict(),
        **record,
        "paper_protocol": True,
        "departs_from_protocol": bool(record["overrides"]),
    }
    seeds = {
        "probe_runs": [seed + r for r in range(used.repeats)],
        **({"label_subset": seed} if frac and not label_list else {}),
    }
    numbers["std"] = "population std over repeats (ddof 0, np.std as in the official code)"
    prefix = "probe" if base.kind == "linear_probe" else "finetune"
    result = _record(
        target,
        base.kind,
        proto,
        _data_record(target, len(train), frac, seed, label_list),
        seeds,
        {"device": str(dev), "precision": prec, "channels_last": channels_last, "runtime_s": time.perf_counter() - t0},
        numbers,
    )
    return _write(target, _name(target, result_name(f"{prefix}-{base.name}", record, frac, label_list)), result)


# ------------------------------------------------------------------------------------------------ diagnostics
def evaluate_diagnostics(
    target: EvalTarget | Path | str,
    group: str = "rotation",
    *,
    max_train: int | None = DIAGNOSTICS_MAX_TRAIN,
    max_test: int | None = DIAGNOSTICS_MAX_TEST,
    weight_decay: float = LBFGS_WEIGHT_DECAY,
    seed: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
) -> dict[str, Any]:
    """Invariance (cosine similarity per element) and equivariance (linear prediction of ``g``) for one group
    (:func:`essl.evaluation.diagnostics.diagnose`). Result ``diagnostics-<group>``."""
    target = as_target(target)
    g = make_group(group)
    dev, dtype, prec = resolve_runtime(device, precision)
    t0 = time.perf_counter()
    mean, std = target.train.mean, target.train.std
    streamed = streamed_splits(target)
    if streamed is not None:
        numbers = diagnose_streamed(
            target.backbone,
            *streamed,
            g,
            mean,
            std,
            device=dev,
            dtype=dtype,
            weight_decay=weight_decay,
            seed=seed,
            max_train=max_train,
            max_test=max_test,
        )
    else:
        train, test = memory_splits(target)
        numbers = diagnose(
            target.backbone,
            train.images,
            test.images,
            g,
            mean,
            std,
            device=dev,
            dtype=dtype,
            weight_decay=weight_decay,
            seed=seed,
            max_train=max_train,
            max_test=max_test,
        )
    protocol = {
        "name": "equivariance_diagnostics",
        "kind": "diagnostics",
        "group": group,
        "source": "essl (this library): invariance = mean cos(f(x), f(g·x)) on the test split per element; "
        "equivariance = L-BFGS linear classifier of g from f(g·x), fitted on the train split, "
        "accuracy on the test split",
        "applied_to": "[0, 1] images before normalisation, un-augmented",
        "weight_decay": weight_decay,
        "max_train_images": max_train,
        "max_test_images": max_test,
        "predicted_in_pretraining": any(e["group"] == group for e in target.source.get("equivariance") or []),
        "overrides": _user_settings(
            {
                "max_train": (DIAGNOSTICS_MAX_TRAIN, max_train),
                "max_test": (DIAGNOSTICS_MAX_TEST, max_test),
                "seed": (0, seed),
                "weight_decay": (LBFGS_WEIGHT_DECAY, weight_decay),
            }
        ),
    }
    result = _record(
        target,
        "diagnostics",
        protocol,
        _data_record(target, numbers["images"]["train"], None, None),
        {"train_subset": seed},
        {"device": str(dev), "precision": prec, "runtime_s": time.perf_counter() - t0},
        numbers,
    )
    return _write(target, _name(target, result_name(f"diagnostics-{group.replace('*', 'x')}", protocol)), result)
