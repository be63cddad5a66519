"""``essl demo``: SimCLR vs E-SimCLR on MNIST-5k, same budget and seed, evaluated side by side.

Both runs use the shipped presets ``mnist5k-simclr`` and ``mnist5k-esimclr`` (identical but for the rotation-
prediction objective), are evaluated with the same named protocols (weighted kNN, k=200, t=0.1; linear probe
on cached features with L-BFGS), and the table and a PNG plot are written into the demo folder. Runs are trained
through :func:`essl.experiments.lifecycle.ensure_run`: rerunning the same command reuses finished runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from essl.errors import EsslError
from essl.evaluation.evaluate import evaluate_knn, evaluate_linear_lbfgs
from essl.evaluation.plots import figure, png
from essl.evaluation.report import markdown_lines
from essl.experiments.lifecycle import ensure_run
from essl.runs import RESULTS_JSON, RESULTS_MD, prepare_run_dir, read_metrics, write_files
from essl.training.config import load_config

DEMO_RUNS = (("SimCLR", "mnist5k-simclr"), ("E-SimCLR", "mnist5k-esimclr"))
DEFAULT_EPOCHS = 15
DEMO_PNG = "demo.png"
#: What a demo folder holds; anything else in it means it is not one (and it is refused).
DEMO_FILES = frozenset({RESULTS_MD, RESULTS_JSON, DEMO_PNG, *(preset for _, preset in DEMO_RUNS)})


def check_demo_dir(out: Path) -> None:
    """Refuse an ``out`` that is a file or a folder holding anything but an earlier demo's files."""
    if out.exists() and not out.is_dir():
        raise EsslError(f"{out} exists and is not a folder. Choose another --out.")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_FILES and not p.name.startswith(".")) \
        if out.is_dir() else []
    if foreign:
        raise EsslError(f"{out} already exists and holds {', '.join(foreign[:4])}, which are not demo files; it is "
                        f"left untouched. Choose another --out, or pass --overwrite to replace the folder.")


def run_demo(out: Path, epochs: int = DEFAULT_EPOCHS, seed: int = 0, subset: int = 0, overwrite: bool = False,
             progress: bool = True, log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Train (or reuse) both runs in ``out``, evaluate them and write the table, JSON and plot; returns the JSON."""
    if epochs < 1:
        raise EsslError("--epochs must be at least 1.")
    out = Path(out)
    if not overwrite:
        check_demo_dir(out)
    overrides = [f"epochs={epochs}", f"seed={seed}", f"subset={subset}", f"knn_every={max(1, epochs // 5)}",
                 f"warmup_epochs={min(2, epochs)}"]
    configs = [load_config(preset, overrides) for _, preset in DEMO_RUNS]  # validated before anything is written
    if overwrite:
        prepare_run_dir(out, overwrite=True)  # otherwise the first run creates the folder once its data loaded
    results, t_start = [], time.perf_counter()
    for i, ((label, preset), cfg) in enumerate(zip(DEMO_RUNS, configs)):
        log(f"[{i + 1}/{len(DEMO_RUNS)}] pretraining {label} ({preset}, {_epochs(epochs)}, seed {seed})")
        t0 = time.perf_counter()
        run_dir = out / preset
        state = ensure_run(cfg, run_dir, progress=progress, preset_name=preset, log=log)
        metrics = read_metrics(run_dir)
        train_s = time.perf_counter() - t0 if state != "trained" else sum(m.get("epoch_time_s", 0.0) for m in metrics)
        log(f"[{i + 1}/{len(DEMO_RUNS)}] evaluating {label}")
        knn, probe = evaluate_knn(run_dir), evaluate_linear_lbfgs(run_dir)
        results.append({"method": label, "preset": preset, "run_dir": str(run_dir), "knn_top1": knn["top1"],
                        "linear_lbfgs_top1": probe["top1"], "pretrain_seconds": train_s,
                        "rotation_pred_acc": metrics[-1].get("pred_acc/rotation"),
                        "curve": [(m["epoch"], m["knn_top1"]) for m in metrics if "knn_top1" in m]})
    total = time.perf_counter() - t_start
    table = format_table(results, epochs, seed, subset, total)
    log("\n" + table)
    record = {"epochs": epochs, "seed": seed, "subset": subset, "wall_seconds": total, "runs": results}
    written = write_files(out, {RESULTS_MD: table + "\n", RESULTS_JSON: json.dumps(record, indent=2) + "\n",
                                DEMO_PNG: plot_demo(results)})
    log(f"\nwrote {', '.join(map(str, written[:-1]))} and {written[-1]}")
    return record


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def format_table(results: list[dict], epochs: int, seed: int, subset: int, total: float) -> str:
    rows = []
    for r in results:
        rot = "-" if r["rotation_pred_acc"] is None else f"{100 * r['rotation_pred_acc']:.1f}%"
        rows.append([r["method"], f"{r['knn_top1']:.2f}%", f"{r['linear_lbfgs_top1']:.2f}%", rot,
                     f"{r['pretrain_seconds']:.0f} s"])
    lines = [f"MNIST-5k, small CNN, {_epochs(epochs)}, seed {seed}, "
             f"{'all 4,000' if not subset else subset} training digits, 1,000 test digits", ""]
    lines += markdown_lines(["method", "kNN top-1 (k=200, t=0.1)", "linear probe top-1 (cached features, L-BFGS)",
                             "rotation prediction acc. (train)", "pretrain time"], rows)
    lines += ["", f"total wall time: {total / 60:.1f} min"]
    return "\n".join(lines)


def plot_demo(results: list[dict]) -> bytes:
    """Test accuracy of both runs by protocol, and their kNN monitor over epochs (PNG bytes)."""
    fig = figure(10, 4)
    ax1, ax2 = fig.subplots(1, 2)
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
    return png(fig)
