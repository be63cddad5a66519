"""The photonics experiment of E-SSL (Dangovski et al. 2022; rdangovs/essl ``photonics/``) end to end.

For one family (``gpm`` or ``blob``) it pretrains the three methods of the paper's photonics table with the
presets ``phc-<family>-simclr``, ``-simclr-transform`` and ``-esimclr`` (:mod:`essl.training.pretrain`),
fine-tunes each encoder with the DOS-regression protocol (:mod:`essl.evaluation.photonics`; optionally also a
randomly initialised encoder, ``--scratch``), and writes a table of the relative DOS error (minimum over
fine-tuning epochs, selected on the test set as in the paper; mean ± std over fine-tuning seeds).

Checkpoint selection (``protocol``):

- ``official`` (default), as rdangovs/essl ``photonics/main.py``: for ``N`` pretraining epochs (the presets' 200,
  or ``--pretrain-epochs N``) the run trains ``N + 1`` epochs under one per-step cosine and keeps the checkpoints
  after ``N // 2`` and ``N`` epochs (``epochs=N+1 keep_checkpoints=[N//2, N]``: 201, 100 and 200 for the paper,
  whose loop also trains a 201st epoch that it never saves); both are fine-tuned with every seed and each seed
  reports the minimum over epochs *and* checkpoints (:func:`essl.evaluation.photonics.finetune_official`).
  ``N`` must be at least 2. The milestones used and the winner per seed are in the results.
- ``last``: ``N`` epochs under a cosine over ``N``, the last checkpoint fine-tuned (cheaper; essl's earlier
  protocol).

Budgets (``--budget``):

- ``paper``: the presets and the fine-tuning protocol as they are (200 pretraining epochs at batch 256 with the
  paper's encoder, 100 fine-tuning epochs on 3,000 labelled cells). Days on a CPU.
- ``small``: a run sized for two shared CPU cores (:data:`BUDGETS`): the quarter-width encoder
  ``phc_cnn_small``, 600 unlabelled cells, 3 pretraining epochs at batch 64, 30 fine-tuning epochs on 150
  labelled cells. Far too little training to reproduce the paper; every departure is written into the results.

Everything is resumable: a finished pretraining run (same settings) is reused, an unfinished one is continued
from its checkpoint, and an existing fine-tuning result with the same protocol is read instead of recomputed.
A run folder written with *other* settings is never touched (an error says so).

The command line (``essl phc experiment``) is in :mod:`essl.photonics.commands`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from essl.data.photonics import FAMILIES, present_in_window
from essl.errors import EsslError
from essl.evaluation.photonics import (
    FinetuneSettings,
    encoder_from_run,
    encoder_from_scratch,
    ensure_finetuned,
    finetune_official,
)
from essl.evaluation.report import markdown_lines
from essl.experiments.catalog import BUDGETS
from essl.experiments.lifecycle import ensure_run
from essl.runs import (
    check_writable,
    claim_folder,
    experiment_files,
    read_config,
    read_metrics,
    write_files,
)
from essl.training.config import load_config
from essl.training.validation import OPTION_RULES

#: (preset suffix, label in the table), in the paper's order.
METHODS = (("simclr", "SimCLR"), ("simclr-transform", "SimCLR + Transform"), ("esimclr", "E-SimCLR"))
#: What an experiment folder holds (essl.runs ownership rule): its tables and its run folders.
PHC_EXPERIMENT_FILES = experiment_files("phc-*-results.json", "phc-*-results.md")


# ------------------------------------------------------------------------------------------ pretraining
def ensure_pretrained(preset: str, overrides: list[str], run_dir: Path, progress: bool = True) -> Path:
    """Pretrain ``preset`` + ``overrides`` into ``run_dir``, reusing or continuing a run with the same settings
    (:func:`~essl.experiments.lifecycle.ensure_run`)."""
    ensure_run(load_config(preset, overrides), run_dir, progress=progress, preset_name=preset, log=print)
    return run_dir


# ------------------------------------------------------------------------------------------ the table
def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def results_table(family: str, rows: list[dict[str, Any]]) -> str:
    """Markdown table of the experiment's rows (with the winning checkpoint per seed under the official
    protocol)."""
    official = any(r.get("winners") for r in rows)
    header = [
        f"{family.upper()} method",
        "preset",
        "pretraining",
        "rel. DOS error, min over epochs (test-selected)",
        "after the last epoch",
        "pred. acc.",
        "pretrain / fine-tune wall",
    ]
    if official:
        header.insert(4, "checkpoint chosen per seed")
    cells = []
    for r in rows:
        s = r["summary"]
        acc = f"{r['pred_acc']:.2f}" if r.get("pred_acc") is not None else "–"
        row = [
            r["label"],
            r["preset"] or "–",
            r["pretraining"],
            _fmt(s["mean"], s["std"]),
            _fmt(s["final_mean"], s["final_std"]),
            acc,
            f"{r['pretrain_s']:.0f} s / {r['finetune_s']:.0f} s",
        ]
        if official:
            winners = r.get("winners") or {}
            row.insert(4, ", ".join(w.removeprefix("epoch_").lstrip("0") for w in winners.values()) or "–")
        cells.append(row)
    return "\n".join(markdown_lines(header, cells)) + "\n"


def _pretrain_summary(run_dir: Path) -> tuple[str, float, float | None]:
    cfg = read_config(run_dir)
    rows = read_metrics(run_dir)
    wall = sum(r.get("epoch_time_s", 0.0) for r in rows)
    acc = None
    if rows and cfg.equivariance:
        acc = rows[-1].get(f"pred_acc/{cfg.equivariance[0].group}")
    text = f"{cfg.backbone}, {rows[-1]['epoch'] if rows else 0} ep × {cfg.batch_size}"
    return text, wall, acc


def run_experiment(
    family: str,
    data_root: str | Path,
    out: str | Path,
    budget: str = "small",
    pretrain_epochs: int | None = None,
    extra_overrides: list[str] | None = None,
    finetune_overrides: dict[str, Any] | None = None,
    scratch: bool = False,
    progress: bool = True,
    protocol: str = "official",
) -> dict[str, Any]:
    """Pretrain and fine-tune the three methods (and optionally a random encoder) under ``protocol`` (module
    docstring); write and return the table."""
    OPTION_RULES["protocol"].check("--protocol", protocol)
    if family not in FAMILIES:
        raise EsslError(f"--family must be gpm or blob, got {family!r}.")
    if budget not in BUDGETS:
        raise EsslError(f"--budget must be one of {', '.join(BUDGETS)}, got {budget!r}.")
    spec = BUDGETS[budget]
    root = str(Path(data_root).expanduser())
    for split in ("unlabelled", "pool", "test"):  # every file present before hours of work
        present_in_window(family, split, root)
    overrides = [*spec.pretrain, f"data_root={root}"]
    if pretrain_epochs is not None:
        overrides.append(f"epochs={pretrain_epochs}")
    overrides += list(extra_overrides or [])
    settings = FinetuneSettings(**{**spec.finetune, **(finetune_overrides or {})})
    settings.validate()
    epochs = load_config(f"phc-{family}-{METHODS[0][0]}", overrides).epochs  # N: the last fine-tuned checkpoint
    milestones = [epochs]
    if protocol == "official":
        if epochs < 2:
            raise EsslError(
                f"The official protocol fine-tunes the checkpoints after N//2 and N pretraining epochs (100 and "
                f"200 for the paper); N = {epochs} has no two. Give --pretrain-epochs 2 or more, or --protocol last."
            )
        milestones = [epochs // 2, epochs]
        overrides += [f"epochs={epochs + 1}", f"keep_checkpoints=[{epochs // 2}, {epochs}]"]
    for suffix, _ in METHODS:  # every preset's settings are valid before the first run starts
        load_config(f"phc-{family}-{suffix}", overrides)
    out = Path(out)
    check_writable(out, "phc-experiment", PHC_EXPERIMENT_FILES)  # a folder holding anything else is refused
    with claim_folder(out, "phc-experiment", PHC_EXPERIMENT_FILES, keep=True, what=f"experiment folder {out}"):
        return _run_all(family, root, out, budget, overrides, settings, scratch, progress, protocol, epochs, milestones)


def _run_all(
    family: str,
    root: str,
    out: Path,
    budget: str,
    overrides: list[str],
    settings: FinetuneSettings,
    scratch: bool,
    progress: bool,
    protocol: str,
    epochs: int,
    milestones: list[int],
) -> dict[str, Any]:
    """The pretraining runs, fine-tunings and tables of :func:`run_experiment`, in the claimed folder ``out``."""
    spec = BUDGETS[budget]
    t0 = time.perf_counter()
    rows = []
    for suffix, label in METHODS:
        preset = f"phc-{family}-{suffix}"
        run_dir = ensure_pretrained(preset, overrides, out / preset, progress)
        if protocol == "official":
            payload = finetune_official(run_dir, root, settings, reuse=True)[1]
        else:
            payload = ensure_finetuned(encoder_from_run(run_dir), root, settings)
        text, wall, acc = _pretrain_summary(run_dir)
        if protocol == "official":
            text += f", fine-tuned after {milestones[0]} and {milestones[1]}"
        rows.append(
            {
                "label": label,
                "preset": preset,
                "run_dir": str(run_dir),
                "pretraining": text,
                "pretrain_s": wall,
                "pred_acc": acc,
                "finetune_s": payload["wall_time_s"],
                "summary": payload["summary"],
                "winners": payload.get("selection", {}).get("winners"),
            }
        )
    if scratch:
        backbone = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("backbone=")), "phc_cnn")
        src = encoder_from_scratch(family, out / f"phc-{family}-scratch", backbone)
        payload = ensure_finetuned(src, root, settings)
        rows.append(
            {
                "label": "random init (supervised)",
                "preset": None,
                "run_dir": str(src.out_dir),
                "pretraining": f"{backbone}, none",
                "pretrain_s": 0.0,
                "pred_acc": None,
                "finetune_s": payload["wall_time_s"],
                "summary": payload["summary"],
            }
        )
    table = results_table(family, rows)
    record = {
        "family": family,
        "budget": budget,
        "budget_note": spec.note,
        "protocol": protocol,
        "milestones": milestones,
        "pretrain_overrides": overrides,
        "finetune": {
            k: getattr(settings, k)
            for k in ("epochs", "batch_size", "lr", "weight_decay", "n_train", "subset_seed", "seeds")
        },
        "selection": (
            "official: per fine-tuning seed, the minimum of the full-test-set error over fine-tuning epochs and "
            f"over the checkpoints after {milestones[0]} and {milestones[1]} of {epochs + 1} pretraining epochs "
            "(rows[].winners: the checkpoint that gave it per seed). TEST-SET SELECTION of the epoch and the "
            "checkpoint, as in the official code (rdangovs/essl photonics/main.py)"
            if protocol == "official"
            else f"last: the checkpoint after {epochs} pretraining epochs; minimum over fine-tuning epochs of "
            "the full-test-set error (test-set selection of the epoch, as in the paper)"
        )
        + "; random init rows: one encoder, minimum over epochs; std over fine-tuning seeds with ddof 0",
        "rows": rows,
        "wall_time_s": time.perf_counter() - t0,
    }
    write_files(
        out,
        {
            f"phc-{family}-results.json": json.dumps(record, indent=2) + "\n",
            f"phc-{family}-results.md": f"Budget {budget!r}: {spec.note}. Pretraining overrides: "
            f"{' '.join(overrides)}. Protocol {protocol!r}: {record['selection']}.\n\n{table}",
        },
    )
    print(table, end="")
    return record
