"""``essl knn`` and ``essl probe``: evaluate the backbone of a run on its dataset's test split."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from essl.data import load_dataset
from essl.errors import EsslError
from essl.evaluation.features import extract_features
from essl.evaluation.knn import knn_accuracy
from essl.evaluation.linear import linear_probe_accuracy
from essl.evaluation.loading import load_run_backbone
from essl.evaluation.results import write_result


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("knn", help="weighted kNN accuracy of a run's frozen backbone (k=200, t=0.1)")
    k.add_argument("run_dir", type=Path)
    k.add_argument("--k", type=int, default=200)
    k.add_argument("--t", type=float, default=0.1)
    k.add_argument("--data-root", help="dataset location, if it moved since pretraining")
    k.set_defaults(func=run_knn)

    p = sub.add_parser("probe", help="linear probe on frozen features (cached, L-BFGS logistic regression)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--data-root", help="dataset location, if it moved since pretraining")
    p.set_defaults(func=run_probe)


def frozen_features(run_dir: Path, data_root: str | None = None) -> dict[str, Any]:
    """Backbone features of the train and test splits of the run's dataset (un-augmented, eval mode)."""
    backbone, cfg, ckpt_path = load_run_backbone(run_dir)
    root = data_root or cfg.data_root
    train = load_dataset(cfg.dataset, "train", root, cfg.image_size)
    test = load_dataset(cfg.dataset, "test", root, cfg.image_size)
    if train.labels is None or test.labels is None:
        raise EsslError(f"Dataset {cfg.dataset!r} has no labels; kNN and probes need a labelled train/test split.")
    torch.manual_seed(0)
    feats = {split: extract_features(backbone, data.images, train.mean, train.std)
             for split, data in (("train", train), ("test", test))}
    return {"cfg": cfg, "checkpoint": str(ckpt_path), "train": train, "test": test, **{f"{s}_features": f
                                                                                        for s, f in feats.items()}}


def evaluate_knn(run_dir: Path, k: int = 200, t: float = 0.1, data_root: str | None = None) -> dict[str, Any]:
    f = frozen_features(run_dir, data_root)
    acc = knn_accuracy(f["train_features"], f["train"].labels, f["test_features"], f["test"].labels,
                       f["train"].num_classes, k, t)
    result = {"protocol": {"name": "knn", "k": k, "t": t, "similarity": "cosine", "vote": "exp(sim/t) weighted",
                           "bank": f"{f['cfg'].dataset} train (un-augmented)", "eval": f"{f['cfg'].dataset} test"},
              "checkpoint": f["checkpoint"], "seeds": {"pretrain": f["cfg"].seed}, "top1": acc}
    write_result(run_dir, "knn", result)
    return result


def evaluate_linear_lbfgs(run_dir: Path, weight_decay: float = 1e-4, data_root: str | None = None) -> dict[str, Any]:
    f = frozen_features(run_dir, data_root)
    acc = linear_probe_accuracy(f["train_features"], f["train"].labels, f["test_features"], f["test"].labels,
                                f["train"].num_classes, weight_decay)
    result = {"protocol": {"name": "linear_lbfgs", "solver": "L-BFGS logistic regression on cached features",
                           "augmentation": "none", "standardised": True, "weight_decay": weight_decay,
                           "train": f"{f['cfg'].dataset} train", "eval": f"{f['cfg'].dataset} test"},
              "checkpoint": f["checkpoint"], "seeds": {"pretrain": f["cfg"].seed}, "top1": acc}
    write_result(run_dir, "linear_lbfgs", result)
    return result


def run_knn(args: argparse.Namespace) -> int:
    r = evaluate_knn(args.run_dir, args.k, args.t, args.data_root)
    print(f"kNN top-1 (k={args.k}, t={args.t}): {r['top1']:.2f}%  [{r['checkpoint']}]")
    return 0


def run_probe(args: argparse.Namespace) -> int:
    r = evaluate_linear_lbfgs(args.run_dir, args.weight_decay, args.data_root)
    print(f"linear probe top-1 (cached features, L-BFGS): {r['top1']:.2f}%  [{r['checkpoint']}]")
    return 0
