"""``essl knn | probe | finetune | diagnose | report``: evaluate encoders with named protocols, then compare runs.

Each command takes a run folder written by ``essl pretrain`` (``RUN_DIR``) or a released backbone file
(``--backbone-file PATH --dataset NAME --data-root PATH``), writes ``eval/<name>.json`` (see
:mod:`essl.evaluation.evaluate`) and prints the number together with its protocol's name.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from collections.abc import Callable

from essl.catalog import PRECISIONS
from essl.errors import EsslError
from essl.evaluation.catalog import (
    DIAGNOSTICS_MAX_TEST,
    DIAGNOSTICS_MAX_TRAIN,
    FINETUNE_PROTOCOLS,
    LBFGS_WEIGHT_DECAY,
    PROTOCOLS,
    RELEASED_ARCHS,
)
from essl.evaluation.results import accuracy_text, departures

if TYPE_CHECKING:
    from essl.evaluation.loading import EvalTarget

__all__ = ["register", "cmd_knn", "cmd_probe", "cmd_finetune", "cmd_diagnose", "cmd_report"]


def _target_args(p: argparse.ArgumentParser, precision: str) -> None:
    p.set_defaults(interrupted="the result being computed was not written (no file is left half-written)")
    p.add_argument("run_dir", type=Path, nargs="?", metavar="RUN_DIR", help="run folder written by `essl pretrain`")
    g = p.add_argument_group("released checkpoints and data")
    g.add_argument(
        "--backbone-file",
        type=Path,
        metavar="PATH",
        help="a released backbone instead of RUN_DIR (layouts: {'backbone': torchvision keys}, "
        "{'state_dict': 'module.backbone.*'}, or a bare torchvision state_dict)",
    )
    g.add_argument(
        "--checkpoint",
        metavar="NAME|PATH",
        help="evaluate a kept milestone of RUN_DIR (e.g. epoch_0100, see keep_checkpoints) or another "
        "checkpoint file, instead of the last checkpoint.pt",
    )
    g.add_argument("--arch", default="resnet50", choices=RELEASED_ARCHS, help="architecture of --backbone-file")
    g.add_argument(
        "--dataset",
        help="evaluate on this dataset (mnist5k, cifar10, cifar100, folder) instead of "
        "the run's; required with --backbone-file",
    )
    g.add_argument("--data-root", help="dataset location (if it moved since pretraining, or for --dataset)")
    g.add_argument(
        "--image-size",
        type=int,
        help="decode size of image folders (default: the run's, or 224); for "
        "streamed folders (imagenet, or larger than memory) the working "
        "size: shorter side, default the run's or 256, central crop "
        "224/256 of it",
    )
    g.add_argument("--workers", type=int, default=4, help="DataLoader workers decoding streamed folders (default 4)")
    g.add_argument(
        "--out",
        type=Path,
        help="folder for the results (default: RUN_DIR, or <file stem>-eval/ "
        "next to --backbone-file); results go to OUT/eval/",
    )
    r = p.add_argument_group("runtime")
    r.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    r.add_argument(
        "--precision",
        default=precision,
        choices=PRECISIONS,
        help=f"autocast precision of the backbone (default {precision}; auto = bf16 where fast)",
    )
    r.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")


def register(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser(
        "knn",
        help="weighted kNN accuracy of a frozen backbone (k=200, t=0.1)",
        description="Weighted kNN (the training monitor's code): cosine similarity, top-k votes "
        "weighted by exp(sim/t); bank = train split, evaluated on the test split.",
    )
    _target_args(k, "fp32")
    k.add_argument("--k", type=int, help="neighbours (default 200, or every training image if there are fewer)")
    k.add_argument("--t", type=float, default=0.1)
    k.set_defaults(func=cmd_knn)

    probes = ["linear_lbfgs", *PROTOCOLS]
    p = sub.add_parser(
        "probe",
        help="linear probe of a frozen backbone with a named protocol",
        description="Linear probe. Protocols: cifar (the paper's: SGD lr 30, 100 epochs, "
        "augmentation, 5 repeats), imagenet_simclr, imagenet_bt, imagenet_simsiam (the "
        "released ImageNet scripts), linear_lbfgs (fast: L-BFGS on cached features; "
        "not a paper protocol). See docs/evaluation.md.",
    )
    _target_args(p, "auto")
    p.add_argument(
        "--protocol",
        default="linear_lbfgs",
        choices=probes,
        help="default: linear_lbfgs (fast; not a paper protocol); the paper's CIFAR protocol is cifar",
    )
    _protocol_args(p)
    p.add_argument(
        "--weight-decay",
        type=float,
        default=None,
        help=f"linear_lbfgs only: L2 penalty (default {LBFGS_WEIGHT_DECAY:g}; another value gets its own result file)",
    )
    p.set_defaults(func=cmd_probe)

    f = sub.add_parser(
        "finetune",
        help="fine-tune backbone + linear head end to end (optionally on few labels)",
        description="Full fine-tuning with the Barlow Twins `evaluate.py --weights finetune` recipe "
        "(SGD, classifier lr 0.5, backbone lr 0.005, wd 0, 20 epochs, cosine per epoch, "
        "best epoch). See docs/evaluation.md.",
    )
    _target_args(f, "auto")
    f.add_argument("--protocol", default="bt_finetune", choices=list(FINETUNE_PROTOCOLS))
    _protocol_args(f)
    f.set_defaults(func=cmd_finetune)

    d = sub.add_parser(
        "diagnose",
        help="invariance and equivariance of a frozen backbone to transformation groups",
        description="For each group: mean cosine similarity of f(x) and f(g·x) per element "
        "(invariance), and the test accuracy of a linear classifier predicting g from "
        "f(g·x) (equivariance; chance = 1/|G|).",
    )
    _target_args(d, "fp32")
    d.add_argument(
        "--group",
        action="append",
        metavar="NAME",
        help="group to diagnose (repeatable; e.g. rotation, hflip, vflip, rotation*hflip); default: rotation",
    )
    d.add_argument(
        "--max-train",
        type=int,
        default=DIAGNOSTICS_MAX_TRAIN,
        help=f"train images whose orbits fit the classifier of g (seeded subset; default {DIAGNOSTICS_MAX_TRAIN})",
    )
    d.add_argument(
        "--max-test",
        type=int,
        default=DIAGNOSTICS_MAX_TEST,
        help=f"test images the scores are measured on (seeded subset; default {DIAGNOSTICS_MAX_TEST}); with "
        "--max-train it bounds the memory the orbit features take, whatever the dataset's size",
    )
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_diagnose)

    r = sub.add_parser(
        "report",
        help="side-by-side markdown table and PNG plots of one or more runs",
        description="Reads each run folder's settings, metrics and evaluation results; prints a "
        "markdown table (one column per run) and writes report.md and PNG plots.",
    )
    r.add_argument("run_dirs", type=Path, nargs="+", metavar="RUN_DIR")
    r.add_argument(
        "--out",
        type=Path,
        help="output folder (default: FIRST_RUN_DIR/report); only the report's own files are replaced",
    )
    r.set_defaults(func=cmd_report)


def _protocol_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="override the protocol's epochs (recorded as a departure)")
    p.add_argument("--repeats", type=int, help="override the protocol's number of runs (cifar: 5)")
    p.add_argument("--batch-size", type=int, help="override the protocol's batch size (recorded)")
    p.add_argument(
        "--label-fraction",
        type=float,
        metavar="F",
        help="train on a stratified seeded subset with this fraction of the labels (e.g. 0.01, 0.1); "
        "test on the full test split",
    )
    p.add_argument(
        "--label-list",
        type=Path,
        metavar="FILE",
        help="train on the images named in FILE, one file name per line (the SimCLR ImageNet subsets "
        "1percent.txt / 10percent.txt); image folders only",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of run 1 (run i uses seed+i-1) and of the label subset")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _target(args: argparse.Namespace) -> EvalTarget:
    import torch

    from essl.evaluation.loading import load_target
    from essl.training.distributed import init_distributed

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.backbone_file is None and args.run_dir is None:
        raise EsslError(
            "Name a run folder (e.g. `essl knn runs/x`) or a released backbone with --backbone-file PATH "
            "--dataset folder --data-root PATH."
        )
    # under torchrun: one process group; extraction and the probes are split over the processes
    denv = init_distributed(
        "cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu"
    )
    if not denv.is_main:  # only the first process prints (every process computes the same numbers)
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        args.quiet = True
    return load_target(
        args.run_dir,
        backbone_file=args.backbone_file,
        dataset=args.dataset,
        data_root=args.data_root,
        image_size=args.image_size,
        arch=args.arch,
        out=args.out,
        workers=args.workers,
        checkpoint=args.checkpoint,
    )


def _held(target: EvalTarget, command: str) -> contextlib.AbstractContextManager[None]:
    """One process at a time evaluates a folder with ``command`` (its results in ``OUT/eval/``): the lock
    ``eval/.essl-lock.<command>`` (:func:`essl.runs.hold_result`), taken by the first process under torchrun."""
    from essl.evaluation.streamed import dist_info
    from essl.runs import hold_result

    where = f"`essl {command}` of {target.out_dir}"
    return hold_result(target.out_dir, command, where, enabled=dist_info()[0] == 0)


def _progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Progress lines on stderr, at most one every 10 s."""
    if getattr(args, "quiet", False):
        return None
    last = [0.0]

    def say(message: str) -> None:
        now = time.perf_counter()
        if now - last[0] >= 10 or re.search(r"epoch (\d+)/\1:", message):  # and every run's last epoch
            print(f"  {message}", file=sys.stderr, flush=True)
            last[0] = now

    return say


def _where(target: EvalTarget) -> str:
    from essl.runs import EVAL_DIR

    return f"[{target.checkpoint['path']}; results in {target.out_dir / EVAL_DIR}]"


def cmd_knn(args: argparse.Namespace) -> int:
    from essl.evaluation.evaluate import evaluate_knn

    target = _target(args)
    if args.k is not None and args.k > len(target.train):
        raise EsslError(
            f"--k {args.k} is larger than the kNN memory bank ({len(target.train)} training images); "
            f"use --k {len(target.train)} or less."
        )
    k = 200 if args.k is None else args.k
    with _held(target, "knn"):
        r = evaluate_knn(target, k, args.t, device=args.device, precision=args.precision)
    print(f"kNN top-1 [knn: k={k}, t={args.t}]: {r['top1']:.2f}%  {_where(target)}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    from essl.evaluation.evaluate import evaluate_linear_lbfgs

    if args.protocol == "linear_lbfgs":
        given = [n for n in ("epochs", "repeats", "batch_size") if getattr(args, n) is not None]
        if given:
            raise EsslError(
                f"--{given[0].replace('_', '-')} applies to the trained protocols "
                f"({', '.join(PROTOCOLS)}), not to linear_lbfgs."
            )
        target = _target(args)
        wd = LBFGS_WEIGHT_DECAY if args.weight_decay is None else args.weight_decay
        with _held(target, "probe"):
            r = evaluate_linear_lbfgs(
                target,
                wd,
                label_fraction=args.label_fraction,
                label_list=args.label_list,
                seed=args.seed,
                device=args.device,
                precision="fp32" if args.precision == "auto" else args.precision,
            )
        frac = (
            f", the labels in {args.label_list}"
            if args.label_list
            else f", {args.label_fraction:g} of the labels"
            if args.label_fraction
            else ""
        )
        print(
            f"linear probe top-1 [linear_lbfgs: L-BFGS on cached features, wd {wd:g}{frac}; not the paper's "
            f"protocol]: {r['top1']:.2f}%  {_where(target)}"
        )
        return 0
    if args.weight_decay is not None:
        raise EsslError(f"--weight-decay is a linear_lbfgs setting; the {args.protocol} protocol fixes its own.")
    return _run_trained(args, "linear probe")


def cmd_finetune(args: argparse.Namespace) -> int:
    return _run_trained(args, "fine-tuning")


def _run_trained(args: argparse.Namespace, what: str) -> int:
    from essl.evaluation.evaluate import evaluate_protocol

    target = _target(args)
    with _held(target, args.command):
        r = evaluate_protocol(
            target,
            args.protocol,
            epochs=args.epochs,
            repeats=args.repeats,
            batch_size=args.batch_size,
            label_fraction=args.label_fraction,
            label_list=args.label_list,
            seed=args.seed,
            device=args.device,
            precision=args.precision,
            progress=_progress(args),
        )
    print(f"{what} top-1 [{protocol_summary(r)}]: {accuracy_text(r, '%')}  {_where(target)}")
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from essl.evaluation.evaluate import evaluate_diagnostics
    from essl.runs import EVAL_DIR

    target = _target(args)
    with _held(target, "diagnose"):
        for group in args.group or ["rotation"]:
            r = evaluate_diagnostics(
                target,
                group,
                max_train=args.max_train,
                max_test=args.max_test,
                seed=args.seed,
                device=args.device,
                precision=args.precision,
            )
            inv, eq = r["invariance"], r["equivariance"]
            sims = ", ".join(f"{s:.3f}" for s in inv["per_element"])
            accs = ", ".join(f"{a:.1f}" for a in eq["per_element"])
            print(
                f"{group}: invariance cos(f(x), f(g·x)) per element [{sims}] (different images: "
                f"{inv['cross_image_similarity']:.3f}); equivariance: g predicted with {eq['accuracy']:.2f}% "
                f"(chance {eq['chance']:.1f}%; per element [{accs}])"
            )
    print(f"results in {target.out_dir / EVAL_DIR}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from essl.evaluation.report import write_report

    out = write_report(args.run_dirs, args.out)
    print(out["markdown"])
    print(f"report written to {out['folder']}: {', '.join(p.name for p in out['files'])}")
    return 0


def protocol_summary(result: dict[str, Any]) -> str:
    """``cifar, epochs 2 (protocol 100), 10% labels`` — the protocol name and every departure."""
    return ", ".join([result["protocol"]["name"], *departures(result)])
