"""``essl demo``: SimCLR vs E-SimCLR on MNIST-5k, same budget and seed, evaluated side by side.

Both runs use the shipped presets ``mnist5k-simclr`` and ``mnist5k-esimclr`` (identical but for the rotation-
prediction objective), are evaluated with the same named protocols (weighted kNN, k=200, t=0.1; linear probe
on cached features with L-BFGS), and the table and a PNG plot are written into the demo folder.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from essl.errors import EsslError
from essl.runs import RESULTS_JSON, RESULTS_MD, check_run_dir, prepare_run_dir, read_metrics, write_atomic

DEMO_RUNS = (("SimCLR", "mnist5k-simclr"), ("E-SimCLR", "mnist5k-esimclr"))
DEFAULT_EPOCHS = 15
DEMO_PNG = "demo.png"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="pretrain SimCLR and E-SimCLR on MNIST-5k and compare them (~10 min on 2 CPU cores)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="demo folder (default: runs/demo)")
    p.add_argument("--epochs", type=int, default=DEFAULT_EPOCHS, help=f"epochs per run (default {DEFAULT_EPOCHS})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--subset", type=int, default=0, help="train on this many digits (default: all 4,000)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    from essl.evaluation.evaluate import evaluate_knn, evaluate_linear_lbfgs
    from essl.training.config import load_config
    from essl.training.pretrain import pretrain

    if args.epochs < 1:
        raise EsslError("--epochs must be at least 1.")
    out: Path = args.out
    check_run_dir(out, args.overwrite)
    overrides = [f"epochs={args.epochs}", f"seed={args.seed}", f"subset={args.subset}",
                 f"knn_every={max(1, args.epochs // 5)}", f"warmup_epochs={min(2, args.epochs)}"]
    for _, preset in DEMO_RUNS:  # load_config validates: bad settings are refused before anything is written
        load_config(preset, overrides)
    if args.overwrite:
        prepare_run_dir(out, overwrite=True)  # otherwise the first run creates the folder once its data loaded
    results, t_start = [], time.perf_counter()
    for i, (label, preset) in enumerate(DEMO_RUNS):
        print(f"[{i + 1}/{len(DEMO_RUNS)}] pretraining {label} ({preset}, {_epochs(args.epochs)}, seed {args.seed})")
        t0 = time.perf_counter()
        run_dir = pretrain(load_config(preset, overrides), out / preset, progress=not args.no_progress,
                           preset_name=preset)
        train_s = time.perf_counter() - t0
        print(f"[{i + 1}/{len(DEMO_RUNS)}] evaluating {label}")
        knn, probe = evaluate_knn(run_dir), evaluate_linear_lbfgs(run_dir)
        metrics = read_metrics(run_dir)
        results.append({"method": label, "preset": preset, "run_dir": str(run_dir), "knn_top1": knn["top1"],
                        "linear_lbfgs_top1": probe["top1"], "pretrain_seconds": train_s,
                        "rotation_pred_acc": metrics[-1].get("pred_acc/rotation"),
                        "curve": [(m["epoch"], m["knn_top1"]) for m in metrics if "knn_top1" in m]})
    total = time.perf_counter() - t_start
    table = format_table(results, args, total)
    print("\n" + table)
    write_atomic(out / RESULTS_MD, table + "\n")
    write_atomic(out / RESULTS_JSON, json.dumps({"epochs": args.epochs, "seed": args.seed, "subset": args.subset,
                                                 "wall_seconds": total, "runs": results}, indent=2) + "\n")
    plot_path = plot_demo(results, out / DEMO_PNG)
    print(f"\nwrote {out / RESULTS_MD}, {out / RESULTS_JSON} and {plot_path}")
    return 0


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def format_table(results: list[dict], args: argparse.Namespace, total: float) -> str:
    lines = [f"MNIST-5k, small CNN, {_epochs(args.epochs)}, seed {args.seed}, "
             f"{'all 4,000' if not args.subset else args.subset} training digits, 1,000 test digits",
             "",
             "| method | kNN top-1 (k=200, t=0.1) | linear probe top-1 (cached features, L-BFGS) | "
             "rotation prediction acc. (train) | pretrain time |",
             "|---|---|---|---|---|"]
    for r in results:
        rot = "-" if r["rotation_pred_acc"] is None else f"{100 * r['rotation_pred_acc']:.1f}%"
        lines.append(f"| {r['method']} | {r['knn_top1']:.2f}% | {r['linear_lbfgs_top1']:.2f}% | {rot} | "
                     f"{r['pretrain_seconds']:.0f} s |")
    lines += ["", f"total wall time: {total / 60:.1f} min"]
    return "\n".join(lines)


def plot_demo(results: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = [r["method"] for r in results]
    width = 0.38
    xs = range(len(results))
    for offset, key, label in ((-width / 2, "knn_top1", "kNN (k=200, t=0.1)"),
                               (width / 2, "linear_lbfgs_top1", "linear probe (L-BFGS, cached)")):
        vals = [r[key] for r in results]
        bars = ax1.bar([x + offset for x in xs], vals, width, label=label)
        ax1.bar_label(bars, fmt="%.1f", fontsize=8)
    ax1.set_xticks(list(xs), names)
    lows = [min(r["knn_top1"], r["linear_lbfgs_top1"]) for r in results]
    ax1.set_ylim(max(0, min(lows) - 10), 100)
    ax1.set_ylabel("test top-1 accuracy (%)")
    ax1.set_title("MNIST-5k test accuracy")
    ax1.legend(fontsize=8, loc="lower right")
    for r in results:
        if r["curve"]:
            ep, acc = zip(*r["curve"])
            ax2.plot(ep, acc, marker="o", label=r["method"])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("kNN top-1 (%)")
    ax2.set_title("kNN monitor during pretraining")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    fig.tight_layout()
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=110))
    plt.close(fig)
    return path
