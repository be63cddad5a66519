"""``essl demo``: a base method vs its E- variant on MNIST-5k, at equal epochs and at equal compute, over seeds.

For every method asked for (``--methods simclr,byol``, default SimCLR) and every seed, the demo trains

1. the base method (preset ``mnist5k-<method>``) for ``--epochs`` epochs;
2. its E- variant (``mnist5k-e<method>``: the same plus rotation prediction) for the same epochs and seed;
3. the base method again with **the E- variant's compute**: ``round(epochs × T_E / T_base)`` epochs, where T is
   the measured training-step time of the first seed's runs 1 and 2 (the prediction branch costs time in every
   step, so an equal-epoch comparison is not an equal-cost one).

Every run is evaluated with the same named protocols (weighted kNN, k=200, t=0.1; linear probe on cached
features with L-BFGS). The table gives mean ± standard deviation over seeds, each variant's backbone passes per
image and step (:mod:`essl.training.cost`) and its measured pretraining time; ``results.md``, ``results.json``
and ``demo.png`` are written into the demo folder. Runs are trained through
:func:`essl.experiments.lifecycle.ensure_run`: rerunning the same command reuses finished runs.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from essl.errors import EsslError
from essl.evaluation.evaluate import evaluate_knn, evaluate_linear_lbfgs
from essl.evaluation.plots import figure, png
from essl.evaluation.report import markdown_lines
from essl.experiments.catalog import DEFAULT_EPOCHS, DEMO_METHODS
from essl.experiments.lifecycle import ensure_run
from essl.runs import (
    RESULTS_JSON,
    RESULTS_MD,
    check_replaceable,
    check_writable,
    claim_folder,
    experiment_files,
    read_metrics,
    write_files,
)
from essl.training.config import load_config
from essl.training.cost import backbone_passes, passes_text, pretraining_seconds, seconds_text

VARIANTS = ("base", "essl", "equal_compute")
DEMO_PNG = "demo.png"
#: What a demo folder holds (essl.runs ownership rule): its table, JSON and plot, and its run folders.
DEMO_FILES = experiment_files(DEMO_PNG)


def parse_methods(text: str) -> list[str]:
    """``"simclr,byol"`` → ``["simclr", "byol"]``; an unknown name is an error that lists the known ones."""
    names = [m.strip() for m in text.split(",") if m.strip()]
    unknown = [m for m in names if m not in DEMO_METHODS]
    if unknown or not names:
        raise EsslError(
            f"--methods: unknown method(s) {', '.join(unknown) or '(none)'}; choose from "
            f"{', '.join(DEMO_METHODS)} (comma-separated)."
        )
    return list(dict.fromkeys(names))


def _overrides(epochs: int, seed: int, subset: int) -> list[str]:
    return [
        f"epochs={epochs}",
        f"seed={seed}",
        f"subset={subset}",
        f"knn_every={max(1, epochs // 5)}",
        f"warmup_epochs={min(2, epochs)}",
    ]


def equal_compute_epochs(epochs: int, base_seconds: float, essl_seconds: float) -> int:
    """Epochs of the base method that cost what ``epochs`` epochs of the E- variant cost (at least ``epochs``)."""
    return max(epochs, round(epochs * essl_seconds / max(base_seconds, 1e-9)))


def run_demo(
    out: Path,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    subset: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], Any] = print,
    methods: str = "simclr",
    seeds: int = 1,
    equal_compute: bool = True,
) -> dict[str, Any]:
    """Train (or reuse) every run in ``out``, evaluate them and write the table, JSON and plot; returns the JSON."""
    if epochs < 1:
        raise EsslError("--epochs must be at least 1.")
    if seeds < 1:
        raise EsslError("--seeds must be at least 1.")
    names = parse_methods(methods)
    out = Path(out)
    if overwrite:  # only a demo folder essl wrote is replaced; a folder with anything else is refused
        check_replaceable(out, "demo", DEMO_FILES)
    else:  # an earlier demo's folder is continued (its finished runs reused)
        check_writable(out, "demo", DEMO_FILES)
    seed_list = list(range(seed, seed + seeds))
    for method in names:  # load_config validates: bad settings are refused before anything is written
        for preset in DEMO_METHODS[method][1:]:
            load_config(preset, _overrides(epochs, seed, subset))
    with claim_folder(out, "demo", DEMO_FILES, overwrite=overwrite, keep=not overwrite, what=f"demo folder {out}"):
        return _train_and_write(out, names, seed_list, epochs, subset, progress, log, equal_compute)


def _train_and_write(
    out: Path,
    names: list[str],
    seed_list: list[int],
    epochs: int,
    subset: int,
    progress: bool,
    log: Callable[[str], Any],
    equal_compute: bool,
) -> dict[str, Any]:
    """The demo's runs, evaluations and files, in the claimed folder ``out``."""
    variants = VARIANTS if equal_compute else VARIANTS[:2]
    total_runs = len(names) * len(seed_list) * len(variants)
    runs: list[dict[str, Any]] = []
    t_start = time.perf_counter()
    for method in names:
        label, base_preset, e_preset = DEMO_METHODS[method]
        equal_epochs = epochs  # set from the first seed's measured times before the first equal-compute run
        for s in seed_list:  # seed-major: a demo stopped early holds complete seeds
            for variant in variants:
                if variant == "equal_compute" and s == seed_list[0]:
                    first = {
                        r["variant"]: r["pretrain_seconds"]
                        for r in runs
                        if r["base"] == method and r["seed"] == seed_list[0]
                    }
                    equal_epochs = equal_compute_epochs(epochs, first["base"], first["essl"])
                preset = e_preset if variant == "essl" else base_preset
                n_epochs = equal_epochs if variant == "equal_compute" else epochs
                name = {"base": label, "essl": f"E-{label}", "equal_compute": f"{label}, equal compute"}[variant]
                run_dir = out / (
                    f"{preset}-equal-compute-seed{s}" if variant == "equal_compute" else f"{preset}-seed{s}"
                )
                log(f"[{len(runs) + 1}/{total_runs}] pretraining {name} ({preset}, {_epochs(n_epochs)}, seed {s})")
                cfg = load_config(preset, _overrides(n_epochs, s, subset))
                ensure_run(cfg, run_dir, progress=progress, preset_name=preset, log=log)
                log(f"[{len(runs) + 1}/{total_runs}] evaluating {name}")
                knn, probe = evaluate_knn(run_dir), evaluate_linear_lbfgs(run_dir)
                metrics = read_metrics(run_dir)
                runs.append(
                    {
                        "method": name,
                        "base": method,
                        "variant": variant,
                        "preset": preset,
                        "seed": s,
                        "epochs": n_epochs,
                        "run_dir": str(run_dir),
                        "knn_top1": knn["top1"],
                        "linear_lbfgs_top1": probe["top1"],
                        "pretrain_seconds": pretraining_seconds(metrics),
                        "backbone_passes": backbone_passes(cfg),
                        "rotation_pred_acc": metrics[-1].get("pred_acc/rotation"),
                        "curve": [(m["epoch"], m["knn_top1"]) for m in metrics if "knn_top1" in m],
                    }
                )
    total = time.perf_counter() - t_start
    summary = summarise(runs)
    table = format_table(summary, epochs, seed_list, subset, total)
    log("\n" + table)
    record = {
        "epochs": epochs,
        "seeds": seed_list,
        "subset": subset,
        "methods": names,
        "wall_seconds": total,
        "summary": summary,
        "runs": runs,
    }
    written = write_files(
        out,
        {
            RESULTS_MD: table + "\n",
            RESULTS_JSON: json.dumps(record, indent=2) + "\n",
            DEMO_PNG: plot_demo(summary, runs),
        },
    )
    log(f"\nwrote {', '.join(map(str, written[:-1]))} and {written[-1]}")
    return record


def _epochs(n: int) -> str:
    return f"{n} epoch" if n == 1 else f"{n} epochs"


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (method, variant) in run order: mean and sample standard deviation over seeds."""
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in runs:
        rows.setdefault((r["base"], r["variant"]), []).append(r)
    out = []
    for group in rows.values():
        first = group[0]
        row = {
            "method": first["method"],
            "base": first["base"],
            "variant": first["variant"],
            "epochs": first["epochs"],
            "seeds": [r["seed"] for r in group],
            "backbone_passes": first["backbone_passes"],
        }
        for key in ("knn_top1", "linear_lbfgs_top1", "pretrain_seconds"):
            row[key], row[f"{key}_std"] = _mean_std([r[key] for r in group])
        rot = [r["rotation_pred_acc"] for r in group if r["rotation_pred_acc"] is not None]
        row["rotation_pred_acc"] = statistics.fmean(rot) if rot else None
        out.append(row)
    return out


def _pm(mean: float, std: float | None, unit: str = "%") -> str:
    return f"{mean:.2f}{unit}" if std is None else f"{mean:.2f} ± {std:.2f}{unit}"


def format_table(summary: list[dict[str, Any]], epochs: int, seeds: list[int], subset: int, total: float) -> str:
    seed_text = (
        f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {seeds[0]}-{seeds[-1]} (mean ± std over {len(seeds)})"
    )
    rows = []
    for r in summary:
        rot = "-" if r["rotation_pred_acc"] is None else f"{100 * r['rotation_pred_acc']:.1f}%"
        rows.append(
            [
                r["method"],
                str(r["epochs"]),
                _pm(r["knn_top1"], r["knn_top1_std"]),
                _pm(r["linear_lbfgs_top1"], r["linear_lbfgs_top1_std"]),
                rot,
                passes_text(r["backbone_passes"]),
                seconds_text(r["pretrain_seconds"]),
            ]
        )
    lines = [
        f"MNIST-5k, small CNN, {_epochs(epochs)}, {seed_text}, "
        f"{'all 4,000' if not subset else subset} training digits, 1,000 test digits",
        "",
    ]
    lines += markdown_lines(
        [
            "method",
            "epochs",
            "kNN top-1 (k=200, t=0.1)",
            "linear probe top-1 (cached features, L-BFGS)",
            "rotation prediction acc. (train)",
            "backbone passes / image / step",
            "pretrain time (training steps)",
        ],
        rows,
    )
    lines += [
        "",
        "Backbone passes: images through the backbone per training image and step, weighted by pixel count "
        'relative to an SSL view (prediction crops count (crop/view)² each). "Equal compute": the base '
        "method trained for as many epochs as take the time of the E- variant's epochs (measured on the "
        "first seed's pair of runs). Pretrain time: measured training steps per run (mean over seeds).",
        "",
        f"total wall time: {total / 60:.1f} min",
    ]
    return "\n".join(lines)


def plot_demo(summary: list[dict[str, Any]], runs: list[dict[str, Any]]) -> bytes:
    """Test accuracy of every variant by protocol (mean ± std over seeds), and the kNN monitor over epochs."""
    fig = figure(11, 4.2)
    ax1, ax2 = fig.subplots(1, 2)
    width = 0.38
    xs = range(len(summary))
    for offset, key, label in (
        (-width / 2, "knn_top1", "kNN (k=200, t=0.1)"),
        (width / 2, "linear_lbfgs_top1", "linear probe (L-BFGS, cached)"),
    ):
        vals = [r[key] for r in summary]
        errs = [r[f"{key}_std"] or 0.0 for r in summary]
        bars = ax1.bar([x + offset for x in xs], vals, width, yerr=errs, capsize=3, label=label)
        ax1.bar_label(bars, fmt="%.1f", fontsize=8)
    ax1.set_xticks(list(xs), [f"{r['method']}\n({r['epochs']} ep)" for r in summary], fontsize=8)
    lows = [min(r["knn_top1"], r["linear_lbfgs_top1"]) for r in summary]
    ax1.set_ylim(max(0, min(lows) - 10), 100)
    ax1.set_ylabel("test top-1 accuracy (%)")
    n_seeds = len(summary[0]["seeds"])
    ax1.set_title("MNIST-5k test accuracy" + (f" (mean ± std, {n_seeds} seeds)" if n_seeds > 1 else ""))
    ax1.legend(fontsize=8, loc="lower right")
    for row in summary:
        points: dict[int, list[float]] = {}
        for r in runs:
            if r["base"] == row["base"] and r["variant"] == row["variant"]:
                for ep, acc in r["curve"]:
                    points.setdefault(ep, []).append(acc)
        if points:
            eps = sorted(points)
            ax2.plot(eps, [statistics.fmean(points[e]) for e in eps], marker="o", label=row["method"])
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("kNN top-1 (%)")
    ax2.set_title("kNN monitor during pretraining (mean over seeds)")
    ax2.legend(fontsize=8)
    ax2.grid(alpha=0.3)
    return png(fig)
