"""The vocabulary of evaluation results: how a result of ``RUN_DIR/eval/<name>.json`` is named and shown.

The files themselves are written and read by :mod:`essl.runs` (:func:`~essl.runs.write_result`,
:func:`~essl.runs.read_results`); the CLI, ``essl report`` and its plots name results with these functions, so a
number is labelled the same everywhere: the evaluation, its protocol and every departure from the protocol.
"""

from __future__ import annotations

from typing import Any

#: Order of the evaluation kinds in a report.
KIND_ORDER = {"knn": 0, "linear_probe": 1, "finetune": 2, "diagnostics": 3}


def departures(result: dict[str, Any]) -> list[str]:
    """How a result departs from its protocol: user overrides, a label fraction, other data."""
    proto = result.get("protocol", {})
    parts = [
        f"{key.replace('_', ' ')} {entry['used']} (protocol {entry['protocol']})"
        for key, entry in sorted(proto.get("overrides", {}).items())
    ]
    data = result.get("data") or {}
    if data.get("label_fraction"):
        parts.append(f"{data['label_fraction'] * 100:g}% labels")
    other = (result.get("source") or {}).get("other_data")
    if other:
        parts.append(f"on {other}")
    return parts


def protocol_label(result: dict[str, Any]) -> str:
    """Row name of a result: the evaluation, its protocol and every departure (e.g.
    ``linear probe · cifar · epochs 2 (protocol 100)``)."""
    proto = result.get("protocol", {})
    kind = result.get("evaluation", proto.get("kind", "?"))
    what = {"knn": "kNN top-1", "linear_probe": "linear probe top-1", "finetune": "fine-tuning top-1"}.get(kind, kind)
    name = proto.get("name", "?")
    if name == "knn" and not proto.get("overrides"):
        name = f"knn (k={proto.get('k')}, t={proto.get('t')})"
    return " · ".join([what, name, *departures(result)])


def accuracy_text(result: dict[str, Any], percent: str = "") -> str:
    """``92.92 ± 0.29 (5 runs)`` for repeated runs, ``92.92`` for one (``percent="%"`` appends a unit)."""
    runs = result.get("runs") or []
    if len(runs) > 1:
        return f"{result['top1']:.2f} ± {result['top1_std']:.2f}{percent} ({len(runs)} runs)"
    return f"{result['top1']:.2f}{percent}"


def result_rows(result: dict[str, Any], stem: str = "") -> list[tuple[tuple, str, str]]:
    """``(sort key, row name, cell)`` for one result file (``stem``: its file name without ``.json``)."""
    kind = result.get("evaluation", "?")
    if "top1" not in result and kind != "diagnostics":
        # a result of another part of essl (e.g. photonics fine-tuning): its summary mean ± std over seeds
        summary: dict[str, Any] = result["summary"] if isinstance(result.get("summary"), dict) else {}
        name = (result.get("protocol") or {}).get("name", "?")
        if "mean" not in summary:
            return [((8, stem), f"{name} · {stem}", "(no summary number)")]
        std = f" ± {summary['std']:.4g}" if summary.get("std") is not None else ""
        n = f" ({summary['n_seeds']} seeds)" if summary.get("n_seeds") else ""
        return [((8, stem), f"{name} · {stem}", f"{summary['mean']:.4g}{std}{n}")]
    if kind == "diagnostics":
        g = " · ".join([str(result["protocol"].get("group", result.get("group"))), *departures(result)])
        inv, eq = result["invariance"], result["equivariance"]
        return [
            (
                (3, g, 0),
                f"invariance: mean cos(f(x), f(g·x)), g ≠ e · {g}",
                f"{inv['mean']:.3f} (different images {inv['cross_image_similarity']:.3f})",
            ),
            (
                (3, g, 1),
                f"equivariance: g predicted from f(g·x), test acc. · {g} (chance {eq['chance']:.0f}%)",
                f"{eq['accuracy']:.2f}",
            ),
        ]
    proto = result.get("protocol", {})
    order = (KIND_ORDER.get(kind, 9), 0 if proto.get("name") in ("knn", "linear_lbfgs") else 1, protocol_label(result))
    return [(order, protocol_label(result), accuracy_text(result))]
