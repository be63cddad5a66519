"""Load what is evaluated: the backbone of a run folder (its last checkpoint or a kept milestone), or a released
or exported backbone file, with its data.

Everything is read with weights-only unpickling (:func:`essl.runs.load_checkpoint`); the key
layouts of released files (the official ImageNet, SimSiam and CIFAR-10 checkpoints) are recognised by
:mod:`essl.models.layouts`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from essl.data import ImageData, as_image_data, datasets, load_dataset
from essl.data.image_folder import scan_image_folder
from essl.data.imagenet import split_folder
from essl.errors import EsslError
from essl.evaluation.catalog import RELEASED_ARCHS
from essl.evaluation.streamed import DEFAULT_WORKING_SIZE, StreamedSplit
from essl.models import make_backbone
from essl.models.layouts import load_part, split_layout
from essl.runs import MILESTONE_DIR, load_checkpoint, resolve_checkpoint
from essl.training.checkpoint import check_model_state, checkpoint_config, damaged
from essl.training.config import PretrainConfig
from essl.training.model import ESSLModel


def load_run_backbone(path: Path | str, checkpoint: str | None = None) -> tuple[nn.Module, PretrainConfig, Path]:
    """``(backbone in eval mode, its config, checkpoint path)`` from a run folder or its ``checkpoint.pt``;
    ``checkpoint`` picks a kept milestone (``epoch_0100``) or another file (:func:`resolve_checkpoint`)."""
    backbone, cfg, ckpt_path, _ = load_run(path, checkpoint)
    return backbone, cfg, ckpt_path


def load_run(path: Path | str, checkpoint: str | None = None) -> tuple[nn.Module, PretrainConfig, Path, dict[str, Any]]:
    """As :func:`load_run_backbone`, plus ``{"epoch": completed epochs, "milestone": name or None}``."""
    ckpt_path = resolve_checkpoint(path, checkpoint)
    ckpt = load_checkpoint(ckpt_path)
    cfg = checkpoint_config(ckpt, ckpt_path)  # entry by entry, as --resume checks it
    model = ESSLModel(cfg, _channels_from_state(ckpt["model"], ckpt_path))
    check_model_state(model, ckpt["model"], ckpt_path)
    model.load_state_dict(ckpt["model"])
    milestone = ckpt_path.stem if checkpoint and ckpt_path.parent.name == MILESTONE_DIR else None
    return model.backbone.eval(), cfg, ckpt_path, {"epoch": ckpt.get("epoch"), "milestone": milestone}


def _channels_from_state(state: dict[str, torch.Tensor], path: Path) -> int:
    for key, value in state.items():  # the first conv weight is the stem: (out, in_channels, k, k)
        if str(key).startswith("backbone.") and isinstance(value, torch.Tensor) and value.ndim == 4:
            return value.shape[1]
    raise damaged(path, "its 'model' entry has no convolution weight under backbone.* (the stem)")


def load_backbone_file(path: Path | str, arch: str = "resnet50") -> tuple[nn.Module, dict[str, Any]]:
    """A released or exported backbone (eval mode) and a description of the file (layout, arch); every layout of
    :func:`essl.models.layouts.split_layout` except an essl run checkpoint (evaluate the run folder instead)."""
    if arch not in RELEASED_ARCHS:
        raise EsslError(f"--arch must be one of {', '.join(RELEASED_ARCHS)}, got {arch!r}.")
    path = Path(path)
    weights = split_layout(load_checkpoint(path), str(path))
    if weights.layout == "essl-run":
        raise EsslError(
            f"{path} is an essl run checkpoint; evaluate it with its run folder (RUN_DIR, and "
            f"--checkpoint for a milestone) instead of --backbone-file."
        )
    stem = weights.backbone.get("conv1.weight")
    if not isinstance(stem, torch.Tensor) or stem.ndim != 4:
        raise EsslError(
            f"{path}: no 'conv1.weight' among the backbone weights (layout {weights.layout}); this is not a ResNet."
        )
    backbone = make_backbone(arch, in_channels=stem.shape[1])
    try:
        load_part(backbone, weights.backbone, "backbone", str(path))
    except EsslError as exc:
        raise EsslError(
            f"{path} does not fit a {arch}: {exc} Pass the right --arch ({', '.join(RELEASED_ARCHS)})."
        ) from None
    return backbone.eval(), {"layout": weights.layout, "arch": arch}


def file_digest(path: Path) -> str:
    """SHA-256 of a file, so a result names the exact weights it came from."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class EvalTarget:
    """A backbone to evaluate, its labelled train/test data, and where its results go.

    ``source`` describes the encoder for reports (method, dataset, epochs and groups of a run; layout and arch
    of a released file); ``checkpoint`` is ``{"path", "epoch", "sha256"}``.
    """

    backbone: nn.Module
    train: ImageData | StreamedSplit
    test: ImageData | StreamedSplit
    out_dir: Path
    checkpoint: dict[str, Any]
    source: dict[str, Any]
    seeds: dict[str, Any] = field(default_factory=dict)
    train_files: list[Path] | None = None  # image folders: the train split's files, in the order of ``train``

    @property
    def dataset(self) -> str:
        return self.source["dataset"]

    @property
    def streamed(self) -> bool:
        """Read from disk batch by batch (:mod:`essl.evaluation.streamed`) rather than held in memory."""
        return isinstance(self.train, StreamedSplit)


def load_target(
    run_dir: Path | str | None = None,
    *,
    backbone_file: Path | str | None = None,
    dataset: str | None = None,
    data_root: str | None = None,
    image_size: int | None = None,
    arch: str = "resnet50",
    out: Path | str | None = None,
    workers: int = 4,
    checkpoint: str | None = None,
) -> EvalTarget:
    """Resolve the command-line choices into an :class:`EvalTarget`.

    Either ``run_dir`` (an ``essl pretrain`` folder; its dataset unless ``dataset``/``data_root`` say otherwise,
    results in ``RUN_DIR/eval``; ``checkpoint`` picks a kept milestone such as ``epoch_0100``) or ``backbone_file``
    with ``dataset`` (results in ``out``, by default ``<file stem>-eval/`` next to the file).

    ``dataset=imagenet``, and an image folder whose decoded splits would exceed the in-memory limit, are streamed
    from disk in ``workers`` DataLoader workers (:class:`~essl.evaluation.streamed.StreamedSplit`); ``image_size``
    is then the working size (shorter side; the backbone sees its ``224/256`` central crop).
    """
    if (run_dir is None) == (backbone_file is None):
        raise EsslError(
            "Give either a run folder (RUN_DIR) or --backbone-file PATH (a released backbone), not "
            "both and not neither."
        )
    if run_dir is not None:
        backbone, cfg, ckpt_path, meta = load_run(run_dir, checkpoint)
        run_path = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
        name = dataset or cfg.dataset
        root = data_root or (cfg.data_root if name == cfg.dataset else None)
        size = image_size or cfg.image_size
        same = name == cfg.dataset and _same_root(root, cfg.data_root)
        source = {
            "kind": "run",
            "run_dir": str(run_path),
            "method": cfg.method,
            "dataset": name,
            "pretrain_dataset": cfg.dataset,
            "other_data": None if same else data_label(name, root),
            "backbone": cfg.backbone,
            "epochs": cfg.epochs,
            "epochs_done": meta.get("epoch"),
            "milestone": meta.get("milestone"),
            "equivariance": [{"group": t.group, "weight": t.weight} for t in cfg.equivariance],
            "invariances": list(cfg.invariances),
        }
        seeds = {"pretrain": cfg.seed}
        out_dir = Path(out) if out else run_path
    else:
        if checkpoint is not None:
            raise EsslError(
                "--checkpoint picks a checkpoint of a run folder; with --backbone-file the file itself "
                "is the checkpoint."
            )
        if not dataset:
            raise EsslError(
                "--backbone-file needs --dataset (e.g. --dataset folder --data-root PATH with train/ "
                "and test/ class folders, or --dataset cifar10 --data-root PATH)."
            )
        assert backbone_file is not None  # exactly one of run_dir and backbone_file (checked above)
        path = Path(backbone_file)
        backbone, info = load_backbone_file(path, arch)
        ckpt_path, meta = path, {"epoch": None}
        name, root = dataset, data_root
        size = image_size or 224
        source = {
            "kind": "released",
            "file": str(path),
            "dataset": name,
            "method": None,
            "epochs": None,
            "backbone": arch,
            **info,
        }
        seeds = {}
        out_dir = Path(out) if out else path.with_name(f"{path.stem}-eval")
    if name != "mnist5k" and not root:
        raise EsslError(f"Dataset {name!r} is read from disk: give its location with --data-root PATH.")
    folders = image_folder_splits(name, root)
    streamed = folders is not None and (name == "imagenet" or not fits_in_memory(folders, size))
    channels = 1 if _in_channels(backbone) == 1 else 3  # a greyscale backbone reads image folders as grey
    train: ImageData | StreamedSplit
    test: ImageData | StreamedSplit
    if folders is not None and streamed:
        if run_dir is None and not image_size:
            size = DEFAULT_WORKING_SIZE
        train, test = (
            StreamedSplit.scan(folders[0], size, f"{data_label(name, root)}:train", workers, channels),
            StreamedSplit.scan(
                folders[1], size, f"{data_label(name, root)}:test", workers, channels, train_root=folders[0]
            ),
        )
    else:
        train = load_dataset(name, "train", root, size, channels)
        test = load_dataset(name, "test", root, size, channels)
    if train.labels is None or test.labels is None:
        raise EsslError(
            f"Dataset {name!r} has no labels; evaluation needs labelled train/ and test/ splits "
            f"(one subfolder per class)."
        )
    if train.channels != _in_channels(backbone):
        raise EsslError(
            f"The backbone takes {_in_channels(backbone)}-channel images but {name} has {train.channels} channel(s)."
        )
    record = {"path": str(ckpt_path), "epoch": meta.get("epoch"), "sha256": file_digest(ckpt_path)}
    if isinstance(train, StreamedSplit):
        train_files: list[Path] | None = train.files
    else:
        train_files = scan_image_folder(folders[0])[0] if folders else None
    return EvalTarget(backbone, train, test, out_dir, record, source, seeds, train_files)


def image_folder_splits(name: str, root: str | None) -> tuple[Path, Path] | None:
    """``(train folder, test folder)`` of an image-folder dataset (``imagenet``: train/ and val/; ``folder``:
    train/ and test/), or None for the other datasets or a folder without both splits (then the in-memory loader
    says what is missing)."""
    if not root or name not in ("imagenet", "folder"):
        return None
    if name == "imagenet":
        return split_folder(root, "train"), split_folder(root, "test")
    base = Path(root).expanduser()
    return (base / "train", base / "test") if (base / "train").is_dir() and (base / "test").is_dir() else None


def fits_in_memory(folders: tuple[Path, Path], size: int, channels: int = 3) -> bool:
    """Whether both splits decoded at ``size`` stay within :data:`essl.data.datasets.IN_MEMORY_LIMIT_BYTES`."""
    n = sum(len(scan_image_folder(f)[0]) for f in folders)
    return n * channels * size * size <= datasets.IN_MEMORY_LIMIT_BYTES


def data_label(dataset: str, root: str | None) -> str:
    """Short name of a dataset for file and row names: ``cifar10``, or ``folder-<folder name>``."""
    return f"{dataset}-{Path(root).expanduser().name}" if dataset == "folder" and root else dataset


def _same_root(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return a == b or not (a or b)
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _in_channels(backbone: nn.Module) -> int:
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    return -1


def memory_target(
    backbone: nn.Module,
    train: Any,
    test: Any,
    *,
    train_labels: Any = None,
    test_labels: Any = None,
    out: Path | str = "essl-eval",
    name: str = "memory",
) -> EvalTarget:
    """An :class:`EvalTarget` for data already in memory, so that every ``evaluate_*`` function runs on it.

    ``backbone`` is any module mapping images to features (e.g. from :func:`essl.load_backbone`); ``train`` and
    ``test`` are :class:`ImageData` or image arrays/tensors (uint8 N×H×W or N×C×H×W, or floats in [0, 1]) with
    ``train_labels``/``test_labels``. Both splits are normalised with the training images' statistics; results
    go to ``out/eval/``."""
    train = as_image_data(train, train_labels, name=f"{name}-train")
    test = as_image_data(
        test, test_labels, mean=train.mean, std=train.std, num_classes=train.num_classes, name=f"{name}-test"
    )
    if train.labels is None or test.labels is None:
        raise EsslError("Evaluation needs labels for both splits: pass train_labels= and test_labels=.")
    expected = _in_channels(backbone)
    if train.channels != test.channels or expected not in (-1, train.channels):
        raise EsslError(
            f"The backbone takes {_in_channels(backbone)}-channel images; the training images have "
            f"{train.channels} channel(s) and the test images {test.channels}."
        )
    digest = hashlib.sha256()
    for key, value in backbone.state_dict().items():  # names the exact weights evaluated, as a file digest would
        digest.update(key.encode())
        digest.update(value.detach().cpu().float().contiguous().numpy().tobytes())
    source = {"kind": "memory", "dataset": name, "method": None, "epochs": None, "backbone": type(backbone).__name__}
    return EvalTarget(
        backbone.eval(), train, test, Path(out), {"path": None, "epoch": None, "sha256": digest.hexdigest()}, source
    )
