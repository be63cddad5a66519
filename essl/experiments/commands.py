"""``essl demo``, ``essl sweep`` and ``essl export``: the command line of the experiment drivers
(:mod:`essl.experiments`) and of :mod:`essl.export`.

``essl phc experiment`` is part of ``essl phc`` (:mod:`essl.photonics.commands`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from essl.experiments.catalog import DEFAULT_EPOCHS, DEMO_METHODS, PAPER_TRANSFORMS, SWEEP_PROTOCOLS


def register(sub: argparse._SubParsersAction) -> None:
    _add_demo(sub)
    _add_sweep(sub)
    _add_export(sub)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="pretrain a method and its E- variant on MNIST-5k (equal epochs and equal compute) and compare them",
        description="SimCLR and E-SimCLR (rotation prediction) on MNIST-5k with the same budget and "
        "seed, and SimCLR again with E-SimCLR's measured compute, evaluated with kNN and a "
        "linear probe; writes results.md, results.json and demo.png. --methods picks other "
        "base methods, --seeds N repeats over seeds (mean ± std). Rerun the same command "
        "to reuse finished runs.",
    )
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs per run (default {DEFAULT_EPOCHS})")
    p.add_argument(
        "--methods",
        default="simclr",
        help=f"base methods, comma-separated: {', '.join(DEMO_METHODS)} (default: simclr)",
    )
    p.add_argument("--seed", type=int, default=0, help="first seed (default 0)")
    p.add_argument("--seeds", type=int, default=1, help="number of seeds: seed, seed+1, ... (default 1)")
    p.add_argument("--subset", type=int, default=0, help="train on this many digits (default: all 4,000)")
    p.add_argument(
        "--no-equal-compute",
        action="store_true",
        help="skip the base method trained with the E- variant's measured compute",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Handler of ``essl demo``."""
    from essl.experiments.demo import run_demo

    run_demo(
        args.out,
        args.epochs,
        args.seed,
        args.subset,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        methods=args.methods,
        seeds=args.seeds,
        equal_compute=not args.no_equal_compute,
    )
    return 0


def _add_sweep(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="invariance-vs-equivariance sweep over transformations (paper §5.3)",
        description="For every transformation T: a crop-only baseline, T as an invariance (I-SSL) "
        "and T predicted (E-SSL), over several seeds; prints and writes a table and a "
        "bar chart. Rerun the same command to continue a stopped sweep. Example: "
        "`essl sweep --preset mnist5k-simclr --out sweeps/mnist epochs=2 batch_size=128`.",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="settings for every run (epochs=, batch_size=, lr=, data_root=, precision=, ...)",
    )
    p.add_argument(
        "--preset",
        default="mnist5k-simclr",
        help="base preset (its method, backbone, optimiser and dataset; views are replaced by crop-only "
        "ones); e.g. cifar10-simclr with data_root=PATH",
    )
    p.add_argument("--out", type=Path, required=True, help="sweep folder (one subfolder per run)")
    p.add_argument(
        "--transforms",
        default=",".join(PAPER_TRANSFORMS),
        help=f"comma-separated transformations (default: the paper's {','.join(PAPER_TRANSFORMS)}); "
        f"products like rotation*hflip work too",
    )
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..N-1) per run (default 3)")
    p.add_argument("--weight", type=float, default=0.4, help="λ of the E-SSL prediction loss (default 0.4)")
    p.add_argument(
        "--protocol",
        default="knn",
        choices=SWEEP_PROTOCOLS,
        help="evaluation of every run: knn (k=200, t=0.1) or linear_lbfgs (cached-feature probe)",
    )
    p.add_argument(
        "--view",
        help="SSL view recipe: a name, NAME@SIZE (crop_only@24) or a mapping such as "
        "'{recipe: crop_only, scale: [0.5, 1.0]}' (default crop_only_mnist on mnist5k, else "
        "crop_only)",
    )
    p.add_argument(
        "--pred-view",
        help="prediction-crop recipe, in the same forms (default crop_only_mnist_small / crop_only_small)",
    )
    p.add_argument("--head", help="prediction head (default: small for small_cnn, cifar_simclr/cifar_simsiam else)")
    p.add_argument(
        "--pred-samples",
        type=int,
        default=0,
        metavar="R",
        help="E-SSL runs predict R drawn elements per crop instead of every element (default 0: the "
        "whole orbit, as the paper; e.g. 4 makes the 24-element jigsaw as cheap as rotation)",
    )
    p.add_argument(
        "--report", action="store_true", help="train nothing: rebuild the table and chart from the finished runs"
    )
    p.add_argument(
        "--shard",
        default="0/1",
        metavar="I/N",
        help="run only every N-th run starting at I (0-based), so N processes can share one sweep "
        "folder, e.g. one per GPU (default 0/1: all runs)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar inside each run")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args: argparse.Namespace) -> int:
    """Handler of ``essl sweep``."""
    from essl.experiments.sweep import SWEEP_PNG, build_spec, parse_shard, run_sweep
    from essl.runs import RESULTS_JSON, RESULTS_MD

    transforms = [t.strip() for t in args.transforms.split(",") if t.strip()]
    spec, base = build_spec(
        args.preset,
        args.overrides,
        transforms,
        args.seeds,
        args.weight,
        args.protocol,
        args.view,
        args.pred_view,
        args.head,
        args.pred_samples,
    )
    try:
        run_sweep(
            spec, base, args.out, progress=not args.no_progress, report_only=args.report, shard=parse_shard(args.shard)
        )
    except KeyboardInterrupt:
        print(
            "essl: sweep interrupted; finished runs and the last epoch checkpoint of the current run are intact. "
            "Rerun the same command to continue.",
            flush=True,
        )
        return 130
    print()
    print((args.out / RESULTS_MD).read_text(), end="")
    shown = [p for p in (RESULTS_MD, RESULTS_JSON, SWEEP_PNG) if (args.out / p).is_file()]
    print(f"\nwritten: {', '.join(str(args.out / p) for p in shown)}")
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="write a run's backbone as OUT.safetensors (or .pt) plus OUT.json metadata",
        description="Export the backbone of a run: weights with torchvision's key names for the "
        "ResNets, and OUT.json with architecture, input channels and size, feature "
        "dimension, normalisation, the run's config, the checkpoint's SHA-256 and the "
        "run's evaluation results. Load it with essl.load_backbone(OUT) or torch.hub.",
    )
    p.add_argument("run", type=Path, help="run folder written by `essl pretrain` (or a checkpoint file of one)")
    p.add_argument("out", type=Path, help="OUT.safetensors, OUT.pt, or OUT (then .safetensors is added)")
    p.add_argument(
        "--format",
        dest="fmt",
        choices=("safetensors", "pt"),
        help="safetensors (default) or a plain torch.save state dict",
    )
    p.add_argument(
        "--checkpoint",
        metavar="NAME",
        help="a kept milestone (epoch_0100, or 100; RUN/checkpoints/) instead of the last checkpoint",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing OUT and OUT.json")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    """Handler of ``essl export``."""
    from essl.export import export_backbone

    weights, meta_file = export_backbone(
        args.run, args.out, fmt=args.fmt, overwrite=args.overwrite, checkpoint=args.checkpoint
    )
    meta = json.loads(meta_file.read_text())
    size = weights.stat().st_size / 1e6
    print(
        f"wrote {weights} ({meta['architecture']}, {meta['weights']['parameters']:,} parameters, {size:.1f} MB, "
        f"{meta['in_channels']}-channel {meta['input_size']} px input, {meta['feature_dim']}-d features) and "
        f"{meta_file}"
    )
    return 0
