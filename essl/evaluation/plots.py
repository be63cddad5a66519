"""PNG plots of ``essl report`` (matplotlib, Agg canvas; no pyplot, so no global backend state is touched).

- ``curves.png``: pretraining curves from ``metrics.jsonl``: loss (total, and the SSL part when a prediction
  loss is added), the kNN monitor, and the training accuracy of each prediction head, per epoch;
- ``accuracy.png``: every accuracy result (kNN, probes, fine-tuning), one bar per run, ± std over probe runs;
- ``diagnostics-<group>.png``: per group element, the invariance (cosine similarity of f(x) and f(g·x), with the
  level of different images dashed) and the equivariance (test accuracy of predicting g, chance dashed).

Each function returns PNG bytes (or None / {} when there is nothing to draw).
"""

from __future__ import annotations

import io
import textwrap
from typing import TYPE_CHECKING, Any

from essl.evaluation.results import protocol_label, result_rows
from essl.groups import make_group

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def colors(n: int) -> list:
    """``n`` colours of the tab10 cycle: run ``i`` has the same colour in every plot."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def figure(width: float, height: float) -> Figure:
    """A figure with constrained layout, drawn without pyplot (no global backend state is touched). matplotlib is
    imported here, when a plot is made, so that commands that draw nothing (and ``essl --help``) do not load it."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def png(fig: Figure) -> bytes:
    """The figure as PNG bytes (110 dpi, no software tag, so equal plots give equal bytes): every plot essl writes
    (reports, demo, sweep) is made here."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, metadata={"Software": None})
    return buf.getvalue()


def _legend_below(ax, ncol: int = 2) -> None:
    """Legend under the axes, so it never hides a bar or a line."""
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=ncol, frameon=False)


def curves_png(runs: list[dict[str, Any]], names: list[str]) -> bytes | None:
    """Loss, kNN monitor and prediction accuracy over epochs; None if no run has ``metrics.jsonl``."""
    if not any(r["metrics"] for r in runs):
        return None
    from matplotlib.ticker import MaxNLocator

    pred_keys = sorted({k for r in runs for m in r["metrics"] for k in m if k.startswith("pred_acc/")})
    panels = ["loss", "knn"] + (["pred"] if pred_keys else [])
    fig = figure(5.2 * len(panels), 4.0)
    axes = fig.subplots(1, len(panels), squeeze=False, sharex=True)[0]
    palette = colors(len(runs))
    for run, name, color in zip(runs, names, palette):
        m = run["metrics"]
        if not m:
            continue
        ep = [r["epoch"] for r in m]
        axes[0].plot(ep, [r["loss"] for r in m], "-o", ms=3, color=color, label=f"{name}: total")
        if any(k.startswith("pred_loss/") for k in m[-1]):
            axes[0].plot(ep, [r["ssl_loss"] for r in m], "--", color=color, label=f"{name}: SSL part")
        knn = [(r["epoch"], r["knn_top1"]) for r in m if "knn_top1" in r]
        if knn:
            axes[1].plot(*zip(*knn), "-o", ms=4, color=color, label=name)
        if pred_keys:
            for key, style in zip(pred_keys, ["-o", "--s", ":^", "-.v"] * 4):
                vals = [(r["epoch"], 100 * r[key]) for r in m if key in r]
                if vals:
                    axes[2].plot(*zip(*vals), style, ms=3, color=color, label=f"{name}: {key.split('/', 1)[1]}")
    axes[0].set(title="pretraining loss (epoch mean)", xlabel="epoch", ylabel="loss")
    axes[1].set(title="kNN monitor top-1 (each run's k, t)", xlabel="epoch", ylabel="test accuracy (%)")
    if not any("knn_top1" in r for run in runs for r in run["metrics"]):
        axes[1].text(0.5, 0.5, "no kNN monitor in these runs", ha="center", va="center", transform=axes[1].transAxes)
    if pred_keys:
        axes[2].set(title="transformation prediction (train batches)", xlabel="epoch", ylabel="accuracy (%)")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if ax.get_legend_handles_labels()[0]:
            _legend_below(ax)
    return png(fig)


def accuracy_png(runs: list[dict[str, Any]], names: list[str]) -> bytes | None:
    """Grouped bars of every accuracy result; None if there are none."""
    rows: dict[str, list] = {}
    order: dict[str, tuple] = {}
    for i, run in enumerate(runs):
        for stem, res in run["results"].items():
            if res.get("evaluation") in ("knn", "linear_probe", "finetune") and "top1" in res:
                label = protocol_label(res)
                order[label] = result_rows(res, stem)[0][0]  # the table's order
                rows.setdefault(label, [None] * len(runs))[i] = (res["top1"], res.get("top1_std", 0.0))
    if not rows:
        return None
    labels = sorted(rows, key=lambda s: order[s])
    width = 0.8 / len(runs)
    fig = figure(max(6.0, 1.9 * len(labels) * max(1, len(runs) / 2) + 2), 4.6)
    ax = fig.subplots()
    for i, (name, color) in enumerate(zip(names, colors(len(runs)))):
        xs, ys, es = [], [], []
        for j, label in enumerate(labels):
            if rows[label][i] is not None:
                xs.append(j - 0.4 + width * (i + 0.5))
                ys.append(rows[label][i][0])
                es.append(rows[label][i][1] or 0.0)
        bars = ax.bar(xs, ys, width * 0.92, yerr=es, capsize=3, color=color, label=name)
        ax.bar_label(bars, labels=[f"{y:.1f}" for y in ys], fontsize=7, padding=2)
    ax.set_xticks(range(len(labels)), [textwrap.fill(s, 26) for s in labels], fontsize=7)
    ax.set(ylabel="test top-1 (%)", ylim=(0, 105), title="accuracy by protocol (error bars: std over probe runs)")
    ax.grid(axis="y", alpha=0.3)
    _legend_below(ax, ncol=min(len(runs), 4))
    return png(fig)


def diagnostics_pngs(runs: list[dict[str, Any]], names: list[str]) -> dict[str, bytes]:
    """``{"diagnostics-<group>.png": bytes}`` for every group diagnosed in any run."""
    by_group: dict[str, list] = {}  # file key (group, and the dataset when not the run's own) -> result per run
    for i, run in enumerate(runs):
        for res in run["results"].values():
            if res.get("evaluation") == "diagnostics":
                key = res["protocol"]["group"].replace("*", "x")
                other = (res.get("source") or {}).get("other_data")
                if other:
                    key += f"-on-{other}"
                by_group.setdefault(key, [None] * len(runs))[i] = res
    out = {}
    palette = colors(len(runs))
    for key, per_run in sorted(by_group.items()):
        group_name = next(r for r in per_run if r is not None)["protocol"]["group"]
        group = make_group(group_name)
        elements = group.element_names()
        width = 0.8 / len(runs)
        fig = figure(min(20.0, max(9.0, 1.3 * group.order * 2 + 3)), 4.2)
        inv_ax, eq_ax = fig.subplots(1, 2)
        for i, (res, name, color) in enumerate(zip(per_run, names, palette)):
            if res is None:
                continue
            xs = [k - 0.4 + width * (i + 0.5) for k in range(group.order)]
            inv = res["invariance"]
            inv_ax.bar(xs, inv["per_element"], width * 0.92, color=color, label=name)
            inv_ax.hlines(
                inv["cross_image_similarity"],
                -0.5,
                group.order - 0.5,
                colors=[color],
                linestyles="--",
                linewidth=1,
                label=f"{name}: different images",
            )
            eq = res["equivariance"]
            bars = eq_ax.bar(
                xs, eq["per_element"], width * 0.92, color=color, label=f"{name} (mean {eq['accuracy']:.1f}%)"
            )
            if group.order <= 8:
                eq_ax.bar_label(bars, labels=[f"{a:.0f}" for a in eq["per_element"]], fontsize=7, padding=2)
        chance = 100.0 / group.order
        eq_ax.axhline(chance, color="k", linestyle=":", linewidth=1, label=f"chance {chance:.0f}%")
        for ax in (inv_ax, eq_ax):
            ax.set_xticks(
                range(group.order),
                elements,
                rotation=90 if group.order > 8 else 0,
                fontsize=7 if group.order > 8 else None,
            )
            ax.set_xlabel(f"group element g ({group_name})")
            ax.grid(axis="y", alpha=0.3)
            _legend_below(ax)
        inv_ax.set(
            title="invariance: mean cos(f(x), f(g·x)), test split",
            ylabel="cosine similarity",
            ylim=(min(0.0, inv_ax.get_ylim()[0]), 1.05),
        )
        eq_ax.set(title="equivariance: linear prediction of g from f(g·x)", ylabel="test accuracy (%)", ylim=(0, 110))
        out[f"diagnostics-{key}.png"] = png(fig)
    return out
