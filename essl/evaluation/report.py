"""``essl report``: one markdown table comparing runs side by side, plus PNG plots.

A run folder contributes its ``config.yaml`` (what was trained), ``metrics.jsonl`` (training curves) and
``eval/*.json`` (results of ``essl knn | probe | finetune | diagnose``). A folder of results for a released
backbone (``--backbone-file ... --out DIR``) works too: its description comes from the results.

Every accuracy row names the protocol that produced it, with any departure from the paper (fewer epochs, a
label fraction) in the row's name, so numbers from different protocols never share a row. A "Protocols" section
below the table gives each protocol's source.

The output folder keeps a manifest (``.essl-report.json``) of the files a report wrote; a later report replaces
only those. A file of the same name that the report did not write is never overwritten: the report stops with an
error before writing anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from essl.errors import EsslError
from essl.evaluation.plots import accuracy_png, curves_png, diagnostics_pngs
from essl.evaluation.results import result_rows
from essl.runs import CONFIG, EVAL_DIR, has_config, read_config, read_metrics, read_results, write_atomic, write_files
from essl.training.cost import backbone_passes, passes_text, pretraining_seconds, seconds_text

MANIFEST = ".essl-report.json"
METHOD_NAMES = {
    "simclr": "SimCLR",
    "simsiam": "SimSiam",
    "barlow_twins": "Barlow Twins",
    "byol": "BYOL",
    "vicreg": "VICReg",
    "mocov3": "MoCo v3",
}


# ---------------------------------------------------------------------------------------------- collecting
def collect_run(run_dir: Path | str) -> dict[str, Any]:
    """Config (or None), training metrics and evaluation results of one folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise EsslError(
            f"{run_dir} is not a folder. Pass run folders written by `essl pretrain` (or folders of "
            f"evaluation results written with --out)."
        )
    cfg = read_config(run_dir) if has_config(run_dir) else None
    results = read_results(run_dir)
    metrics = read_metrics(run_dir)
    if cfg is None and not results:
        raise EsslError(
            f"{run_dir} has neither {CONFIG} nor {EVAL_DIR}/*.json: nothing to report. Run `essl pretrain` "
            f"or an evaluation (`essl knn {run_dir}` ...) first."
        )
    return {"dir": run_dir, "config": cfg, "metrics": metrics, "results": results}


def column_names(runs: list[dict[str, Any]]) -> list[str]:
    """Folder names, made unique with their parent folder where two runs share a name."""
    names = [r["dir"].resolve().name for r in runs]
    out = []
    for r, name in zip(runs, names):
        out.append(f"{r['dir'].resolve().parent.name}/{name}" if names.count(name) > 1 else name)
    if len(set(out)) < len(out):
        out = [f"{n} ({i + 1})" for i, n in enumerate(out)]
    return out


def _source(run: dict[str, Any]) -> dict[str, Any]:
    cfg = run["config"]
    if cfg is not None:
        return {
            "kind": "run",
            "method": cfg.method,
            "dataset": cfg.dataset,
            "backbone": cfg.backbone,
            "epochs": cfg.epochs,
            "equivariance": [{"group": t.group, "weight": t.weight} for t in cfg.equivariance],
            "invariances": list(cfg.invariances),
            "seed": cfg.seed,
        }
    for res in run["results"].values():
        if "source" in res:
            return res["source"]
    return {"kind": "unknown"}


def method_label(source: dict[str, Any]) -> str:
    """``E-SimCLR (rotation, λ=0.4)``, ``SimCLR``, or ``released resnet50 (file.pth)``."""
    if source.get("kind") == "released":
        return f"released {source.get('arch', '?')} ({Path(source.get('file', '?')).name})"
    base = METHOD_NAMES.get(str(source.get("method")), str(source.get("method")))
    eq = source.get("equivariance") or []
    label = f"E-{base} (" + ", ".join(f"{e['group']}, λ={e['weight']:g}" for e in eq) + ")" if eq else base
    if source.get("invariances"):
        label += " + invariance to " + ", ".join(source["invariances"])
    return label


def build_table(runs: list[dict[str, Any]], names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """Rows of the comparison table: ``(row names in order, {row name: one cell per run})``."""
    head: dict[str, list[str]] = {}
    for i, run in enumerate(runs):
        src = _source(run)
        metrics = run["metrics"]
        cells = {
            "method": method_label(src),
            "dataset": str(src.get("dataset", "–")),
            "backbone": str(src.get("backbone", "–")),
        }
        done = metrics[-1]["epoch"] if metrics else src.get("epochs_done")
        cells["epochs (done / planned)"] = f"{done if done is not None else '–'} / {src.get('epochs') or '–'}"
        if run["config"] is not None:
            cells["backbone passes / image / step (pixel-weighted; cost of the objective)"] = passes_text(
                backbone_passes(run["config"])
            )
        if metrics:
            cells["pretraining time (measured training steps)"] = seconds_text(pretraining_seconds(metrics))
        knn_rows = [m for m in metrics if "knn_top1" in m]
        if knn_rows:
            cfg = run["config"]
            kt = f", k={cfg.knn_k}, t={cfg.knn_t:g}" if cfg is not None else ""
            cells["kNN monitor during training, last (training precision)"] = (
                f"{knn_rows[-1]['knn_top1']:.2f} (epoch {knn_rows[-1]['epoch']}{kt})"
            )
        if metrics:
            for key in sorted(k for k in metrics[-1] if k.startswith("pred_acc/")):
                cells[f"prediction accuracy during training, last epoch (train batches) · {key.split('/', 1)[1]}"] = (
                    f"{100 * metrics[-1][key]:.2f}"
                )
        for key, value in cells.items():
            head.setdefault(key, ["–"] * len(runs))[i] = value
    body: dict[str, list[str]] = {}
    keys: dict[str, tuple] = {}
    for i, run in enumerate(runs):
        done = run["metrics"][-1]["epoch"] if run["metrics"] else None
        for stem, res in run["results"].items():
            info = res.get("checkpoint_info") or (res["checkpoint"] if isinstance(res.get("checkpoint"), dict) else {})
            ckpt_epoch = info.get("epoch")
            stale = done is not None and ckpt_epoch is not None and ckpt_epoch != done
            for order, name, cell in result_rows(res, stem):
                keys[name] = order
                body.setdefault(name, ["–"] * len(runs))[i] = cell + (
                    f" [epoch-{ckpt_epoch} checkpoint]" if stale else ""
                )
    names = list(head) + sorted(body, key=lambda n: keys[n])
    return names, {**head, **body}


def protocol_notes(runs: list[dict[str, Any]]) -> list[str]:
    """One line per protocol used: name, and the source of its settings."""
    seen: dict[str, str] = {}
    for run in runs:
        for res in run["results"].values():
            proto = res.get("protocol", {})
            seen.setdefault(proto.get("name", "?"), proto.get("source") or proto.get("description", ""))
    return [f"- **{name}**: {src}" for name, src in sorted(seen.items())]


def markdown_lines(header: list[str], rows: list[list[str]]) -> list[str]:
    """A markdown table as lines: the header, the separator and one line per row (``|`` in cells escaped). Every
    table essl writes (reports, demo, sweep, photonics experiment) is made here."""

    def line(cells: list[str]) -> str:
        return "|" + "|".join(f" {c} ".replace("|", "\\|") if c else " " for c in map(str, cells)) + "|"

    return [line(header), "|" + "---|" * len(header)] + [line(r) for r in rows]


def markdown(runs: list[dict[str, Any]], names: list[str]) -> str:
    order, rows = build_table(runs, names)
    lines = markdown_lines(["", *names], [[r, *rows[r]] for r in order])
    lines += [
        "",
        "Accuracies are top-1 in % on the test split; ± is the population std over probe runs on the same "
        "encoder. Row names give the protocol and any departure from it.",
        "",
        "Protocols:",
    ]
    lines += protocol_notes(runs) or ["- (no evaluation results yet: run `essl knn`, `essl probe`, `essl diagnose`)"]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------- output folder
def _read_manifest(folder: Path) -> set[str]:
    path = folder / MANIFEST
    if not path.is_file():
        return set()
    try:
        return set(json.loads(path.read_text()).get("files", []))
    except (OSError, ValueError, AttributeError):
        return set()


def write_outputs(folder: Path, files: dict[str, bytes]) -> list[Path]:
    """Write ``{name: bytes}`` into ``folder`` with the manifest rule (see the module docstring)."""
    if folder.exists() and not folder.is_dir():
        raise EsslError(f"--out {folder} is a file; give a folder.")
    owned = _read_manifest(folder)
    clashes = [
        n for n, data in files.items() if (folder / n).exists() and n not in owned and (folder / n).read_bytes() != data
    ]
    if clashes:
        raise EsslError(
            f"{folder} already holds {', '.join(clashes)}, not written by an earlier `essl report`; "
            f"nothing was written. Choose another --out folder, or move those files away."
        )
    paths = write_files(folder, files)
    for stale in owned - set(files):  # our own files from an earlier report that this one does not produce
        if "/" not in stale and (folder / stale).is_file():
            (folder / stale).unlink()
    write_atomic(folder / MANIFEST, (json.dumps({"files": sorted(files)}, indent=1) + "\n").encode())
    return paths


def write_report(run_dirs: list[Path | str], out: Path | str | None = None) -> dict[str, Any]:
    """Build the table and plots of ``run_dirs`` and write them into ``out`` (default ``FIRST/report``).

    Returns ``{"markdown", "folder", "files"}``."""
    if not run_dirs:
        raise EsslError("Name at least one run folder.")
    runs = [collect_run(d) for d in run_dirs]
    names = column_names(runs)
    text = markdown(runs, names)
    folder = Path(out) if out else Path(run_dirs[0]) / "report"
    files: dict[str, bytes] = {
        "report.md": (
            "# essl report\n\n"
            + "Runs: "
            + ", ".join(f"`{n}` ({r['dir']})" for n, r in zip(names, runs))
            + "\n\n"
            + text
        ).encode()
    }
    order, rows = build_table(runs, names)
    files["report.json"] = (
        json.dumps(
            {
                "runs": [str(r["dir"]) for r in runs],
                "columns": names,
                "rows": [{"name": k, "cells": rows[k]} for k in order],
            },
            indent=1,
        )
        + "\n"
    ).encode()
    png = curves_png(runs, names)
    if png is not None:
        files["curves.png"] = png
    png = accuracy_png(runs, names)
    if png is not None:
        files["accuracy.png"] = png
    files.update(diagnostics_pngs(runs, names))
    return {"markdown": text, "folder": folder, "files": write_outputs(folder, files)}
