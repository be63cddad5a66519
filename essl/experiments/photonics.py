"""The photonics experiment of E-SSL (Dangovski et al. 2022; reference/paper.md §3.3, §5.4, §6) end to end.

For one family (``gpm`` or ``blob``) it pretrains the three methods of the paper's photonics table with the
presets ``phc-<family>-simclr``, ``-simclr-transform`` and ``-esimclr`` (:mod:`essl.training.pretrain`),
fine-tunes each encoder with the DOS-regression protocol (:mod:`essl.evaluation.photonics`; optionally also a
randomly initialised encoder, ``--scratch``), and writes a table of the relative DOS error (minimum over
fine-tuning epochs, selected on the test set as in the paper; mean ± std over fine-tuning seeds).

Budgets (``--budget``):

- ``paper``: the presets and the fine-tuning protocol as they are (200 pretraining epochs at batch 256 with the
  paper's encoder, 100 fine-tuning epochs on 3,000 labelled cells). Days on a CPU.
- ``small``: a run sized for two shared CPU cores (:data:`BUDGETS`): the quarter-width encoder
  ``phc_cnn_small``, 600 unlabelled cells, 3 pretraining epochs at batch 64, 30 fine-tuning epochs on 150
  labelled cells. Far too little training to reproduce the paper; every departure is written into the results.

Everything is resumable: a finished pretraining run (same settings) is reused, an unfinished one is continued
from its checkpoint, and an existing fine-tuning result with the same protocol is read instead of recomputed.
A run folder written with *other* settings is never touched (an error says so).

This module also adds ``essl phc finetune`` and ``essl phc experiment`` to the ``essl phc`` command
(:func:`add_parsers`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from essl.cli import positive_int
from essl.errors import EsslError
from essl.runs import CONFIG, has_checkpoint, read_config, read_metrics, read_result, result_path, write_atomic

#: (preset suffix, label in the table), in the paper's order.
METHODS = (("simclr", "SimCLR"), ("simclr-transform", "SimCLR + Transform"), ("esimclr", "E-SimCLR"))


@dataclass(frozen=True)
class Budget:
    """Pretraining overrides (``key=value`` on the presets) and fine-tuning settings of one budget."""

    name: str
    pretrain: tuple[str, ...]
    finetune: dict[str, Any] = field(default_factory=dict)
    note: str = ""


BUDGETS: dict[str, Budget] = {
    "paper": Budget("paper", (), {}, "the paper's settings (presets as written; fine-tuning 100 epochs, 3,000 cells)"),
    "small": Budget(
        "small",
        ("backbone=phc_cnn_small", "subset=600", "epochs=3", "batch_size=64", "channels_last=false"),
        {"epochs": 30, "n_train": 150},
        "CPU-sized for 2 shared cores: quarter-width encoder phc_cnn_small (16-64-64 conv channels, 1024-d), "
        "600 unlabelled cells, 3 pretraining epochs at batch 64 (the paper's lr 1e-3 per 256, i.e. 2.5e-4); "
        "fine-tuning 30 epochs on 150 labelled cells (batch 64, Adam 1e-4), 3 seeds",
    ),
}


# ------------------------------------------------------------------------------------------ pretraining
def ensure_pretrained(preset: str, overrides: list[str], run_dir: Path, progress: bool = True) -> Path:
    """Pretrain ``preset`` + ``overrides`` into ``run_dir``, reusing or continuing a run with the same settings."""
    from essl.training.config import load_config
    from essl.training.pretrain import pretrain

    cfg = load_config(preset, overrides)
    if has_checkpoint(run_dir):
        stored = read_config(run_dir)
        if stored.to_dict() != cfg.to_dict():
            diff = sorted(k for k, v in cfg.to_dict().items() if stored.to_dict().get(k) != v)
            raise EsslError(f"{run_dir} holds a run with other settings ({', '.join(diff)}); it is left untouched. "
                            f"Use another --out, or delete that folder.")
        rows = read_metrics(run_dir)
        if rows and rows[-1]["epoch"] >= cfg.epochs:
            print(f"{preset}: reusing the finished run in {run_dir}")
            return run_dir
        print(f"{preset}: continuing the run in {run_dir} from its checkpoint")
        return pretrain(None, run_dir, resume=True, progress=progress)
    leftovers = {p.name for p in run_dir.iterdir()} if run_dir.is_dir() else set()
    if leftovers - {CONFIG}:
        raise EsslError(f"{run_dir} exists and is not a run folder of this experiment (it holds "
                        f"{', '.join(sorted(leftovers))}); it is left untouched. Use another --out.")
    return pretrain(cfg, run_dir, overwrite=bool(leftovers), progress=progress, preset_name=preset)


# ------------------------------------------------------------------------------------------ fine-tuning
def _protocol_matches(payload: dict[str, Any], settings: Any) -> bool:
    proto = payload.get("protocol", {})
    keys = ("epochs", "batch_size", "lr", "weight_decay", "n_train", "subset_seed", "freeze_encoder", "target",
            "nbands")
    older = {"freeze_encoder": False, "target": "dos", "nbands": 10}  # results written before these settings
    return (all(proto.get(k, older.get(k)) == getattr(settings, k) for k in keys)
            and payload.get("seeds", {}).get("finetune") == list(settings.seeds))


def ensure_finetuned(src: Any, data_root: str, settings: Any, log: Any = print) -> dict[str, Any]:
    """Fine-tune ``src`` unless its folder already holds a result of the same protocol; returns the payload."""
    from essl.evaluation.photonics import finetune

    path = result_path(src.out_dir, settings.result_name())
    payload = read_result(src.out_dir, settings.result_name())
    if payload is not None:
        if not _protocol_matches(payload, settings):
            raise EsslError(f"{path} was fine-tuned with another protocol (seeds, lr, batch ...); it is left "
                            f"untouched. Use another --out, or delete it.")
        log(f"reusing {path}")
        return payload
    return finetune(src, data_root, settings, log=log)[1]


# ------------------------------------------------------------------------------------------ the table
def _fmt(mean: float, std: float) -> str:
    return f"{mean:.4f} ± {std:.4f}"


def results_table(family: str, rows: list[dict[str, Any]]) -> str:
    """Markdown table of the experiment's rows."""
    lines = [f"| {family.upper()} method | preset | pretraining | rel. DOS error, min over epochs (test-selected) "
             f"| after the last epoch | pred. acc. | pretrain / fine-tune wall |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["summary"]
        acc = f"{r['pred_acc']:.2f}" if r.get("pred_acc") is not None else "–"
        lines.append(f"| {r['label']} | {r['preset'] or '–'} | {r['pretraining']} | {_fmt(s['mean'], s['std'])} | "
                     f"{_fmt(s['final_mean'], s['final_std'])} | {acc} | {r['pretrain_s']:.0f} s / "
                     f"{r['finetune_s']:.0f} s |")
    return "\n".join(lines) + "\n"


def _pretrain_summary(run_dir: Path) -> tuple[str, float, float | None]:
    cfg = read_config(run_dir)
    rows = read_metrics(run_dir)
    wall = sum(r.get("epoch_time_s", 0.0) for r in rows)
    acc = None
    if rows and cfg.equivariance:
        acc = rows[-1].get(f"pred_acc/{cfg.equivariance[0].group}")
    text = f"{cfg.backbone}, {rows[-1]['epoch'] if rows else 0} ep × {cfg.batch_size}"
    return text, wall, acc


def run_experiment(family: str, data_root: str | Path, out: str | Path, budget: str = "small",
                   pretrain_epochs: int | None = None, extra_overrides: list[str] | None = None,
                   finetune_overrides: dict[str, Any] | None = None, scratch: bool = False,
                   progress: bool = True) -> dict[str, Any]:
    """Pretrain and fine-tune the three methods (and optionally a random encoder); write and return the table."""
    from essl.evaluation.photonics import FinetuneSettings, encoder_from_run, encoder_from_scratch
    from essl.data.photonics import FAMILIES, present_in_window

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
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    rows = []
    for suffix, label in METHODS:
        preset = f"phc-{family}-{suffix}"
        run_dir = ensure_pretrained(preset, overrides, out / preset, progress)
        payload = ensure_finetuned(encoder_from_run(run_dir), root, settings)
        text, wall, acc = _pretrain_summary(run_dir)
        rows.append({"label": label, "preset": preset, "run_dir": str(run_dir), "pretraining": text,
                     "pretrain_s": wall, "pred_acc": acc, "finetune_s": payload["wall_time_s"],
                     "summary": payload["summary"]})
    if scratch:
        backbone = next((o.split("=", 1)[1] for o in reversed(overrides) if o.startswith("backbone=")), "phc_cnn")
        src = encoder_from_scratch(family, out / f"phc-{family}-scratch", backbone)
        payload = ensure_finetuned(src, root, settings)
        rows.append({"label": "random init (supervised)", "preset": None, "run_dir": str(src.out_dir),
                     "pretraining": f"{backbone}, none", "pretrain_s": 0.0, "pred_acc": None,
                     "finetune_s": payload["wall_time_s"], "summary": payload["summary"]})
    table = results_table(family, rows)
    record = {"family": family, "budget": budget, "budget_note": spec.note, "pretrain_overrides": overrides,
              "finetune": {k: getattr(settings, k) for k in ("epochs", "batch_size", "lr", "weight_decay",
                                                              "n_train", "subset_seed", "seeds")},
              "selection": "minimum over fine-tuning epochs of the full-test-set error (test-set selection, as in "
                           "the paper); std over fine-tuning seeds with ddof 0",
              "rows": rows, "wall_time_s": time.perf_counter() - t0}
    write_atomic(out / f"phc-{family}-results.json", json.dumps(record, indent=2) + "\n")
    write_atomic(out / f"phc-{family}-results.md",
                  f"Budget {budget!r}: {spec.note}. Pretraining overrides: {' '.join(overrides)}.\n\n{table}")
    print(table, end="")
    return record


# ------------------------------------------------------------------------------------------ command line
def add_parsers(phc_subparsers: Any) -> None:
    """Add ``finetune`` and ``experiment`` to the ``essl phc`` sub-commands."""
    ft = phc_subparsers.add_parser(
        "finetune", help="fine-tune a photonics encoder on DOS regression (relative DOS error)",
        description="Fine-tune the encoder of a pretraining run (or a random one, --scratch) with the paper's "
                    "protocol: MLP 1024-1024-1024-512-400, MSE on y - EL, Adam 1e-4, batch 64. Reports the relative "
                    "L1 DOS error as the MINIMUM OVER EPOCHS ON THE TEST SET (the paper's protocol; optimistic), "
                    "and the error after the last epoch; mean ± std over fine-tuning seeds. Writes "
                    "RUN_DIR/eval/phc-finetune-n<N>-e<E>.json.")
    ft.add_argument("run_dir", nargs="?", type=Path, help="run folder of `essl pretrain phc-...`")
    ft.add_argument("--data-root", help="folder with the labelled h5 files [the run's data_root]")
    ft.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="fine-tuning seeds [1 2 3]")
    ft.add_argument("--epochs", type=positive_int, default=100, help="fine-tuning epochs [100]")
    ft.add_argument("--n-train", type=positive_int, default=3000, help="labelled cells, drawn once with seed 1 [3000]")
    ft.add_argument("--batch-size", type=positive_int, default=64, help="[64]")
    ft.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate [1e-4]")
    ft.add_argument("--freeze-encoder", action="store_true",
                    help="train the DOS head only (official --freeze_enc_ft; BatchNorm statistics still update)")
    ft.add_argument("--target", choices=("dos", "bands"), default="dos",
                    help="regress the DOS (the paper's) or the band structures (official predict='bandstructures'; "
                         "needs files generated with --store-bands; metric: the official calpercloss) [dos]")
    ft.add_argument("--nbands", type=positive_int, default=10, help="with --target bands: bands predicted [10]")
    ft.add_argument("--scratch", action="store_true", help="fine-tune a randomly initialised encoder instead")
    ft.add_argument("--backbone-file", type=Path, metavar="PATH",
                    help="fine-tune an encoder file instead: an official photonics checkpoint (EP100/EP200 of "
                         "rdangovs/essl photonics/main.py, keys enc.enc_block2d.*) or an essl encoder state dict")
    ft.add_argument("--family", choices=("gpm", "blob"), help="with --scratch / --backbone-file: the dataset family")
    ft.add_argument("--backbone", default="phc_cnn", help="with --scratch: phc_cnn or phc_cnn_small [phc_cnn]")
    ft.add_argument("--invariances", nargs="+", metavar="GROUP",
                    help="with --scratch / --backbone-file: fine-tuning augmentations [the family's: gpm roll flip, "
                         "blob flip rotation]")
    ft.add_argument("--out", type=Path, help="with --scratch / --backbone-file: folder for the result")
    ft.add_argument("--overwrite", action="store_true", help="replace an existing result of the same name")
    ft.add_argument("--verbose", action="store_true", help="print the test error of every epoch")
    ft.set_defaults(func=cmd_finetune)

    ex = phc_subparsers.add_parser(
        "experiment", help="pretrain SimCLR, SimCLR + Transform and E-SimCLR, fine-tune each, print the table",
        description="The paper's photonics experiment for one family: pretrain the three presets "
                    "phc-<family>-{simclr,simclr-transform,esimclr}, fine-tune every encoder with 3 seeds and "
                    "write OUT/phc-<family>-results.{md,json}. Resumable: rerun the same command to continue.")
    ex.add_argument("--family", required=True, choices=("gpm", "blob"))
    ex.add_argument("--data-root", required=True, help="folder with the unlabelled and labelled h5 files")
    ex.add_argument("--budget", default="small", choices=sorted(BUDGETS),
                    help="small: CPU-sized (see docs/photonics.md); paper: the paper's settings [small]")
    ex.add_argument("--out", type=Path, help="experiment folder [runs/phc-<family>-<budget>]")
    ex.add_argument("--pretrain-epochs", type=positive_int, help="override the budget's pretraining epochs")
    ex.add_argument("--finetune-epochs", type=positive_int, help="override the budget's fine-tuning epochs")
    ex.add_argument("--n-train", type=positive_int, help="override the budget's labelled-set size")
    ex.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds [1 2 3]")
    ex.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                    help="more pretraining overrides for all three presets (e.g. batch_size=64)")
    ex.add_argument("--scratch", action="store_true", help="also fine-tune a randomly initialised encoder")
    ex.add_argument("--freeze-encoder", action="store_true",
                    help="fine-tune the DOS head only (official --freeze_enc_ft)")
    ex.add_argument("--no-progress", action="store_true", help="no progress bars")
    ex.set_defaults(func=cmd_experiment)


def cmd_finetune(args: argparse.Namespace) -> int:
    from essl.evaluation.photonics import (FinetuneSettings, encoder_from_file, encoder_from_run, encoder_from_scratch,
                                         finetune)

    settings = FinetuneSettings(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, n_train=args.n_train,
                                seeds=list(args.seeds), freeze_encoder=args.freeze_encoder, target=args.target,
                                nbands=args.nbands)
    settings.validate()
    sources = [name for name, given in (("RUN_DIR", args.run_dir is not None), ("--scratch", args.scratch),
                                        ("--backbone-file", args.backbone_file is not None)) if given]
    if len(sources) > 1:
        raise EsslError(f"Give one encoder: RUN_DIR (a pretrained run), --scratch (a random one) or --backbone-file "
                        f"PATH; got {' and '.join(sources)}.")
    if args.scratch or args.backbone_file is not None:
        what = "--scratch" if args.scratch else "--backbone-file"
        if not args.family or not args.out or not args.data_root:
            raise EsslError(f"{what} needs --family gpm|blob, --data-root DIR and --out DIR (where the result goes).")
        if args.scratch:  # the result creates OUT/eval
            src = encoder_from_scratch(args.family, args.out, args.backbone, args.invariances)
        else:
            src = encoder_from_file(args.backbone_file, args.family, args.out, args.invariances)
    else:
        if args.run_dir is None:
            raise EsslError("Name the run folder to fine-tune, e.g. `essl phc finetune runs/phc-gpm-esimclr "
                            "--data-root data/phc`, or pass --scratch for a random encoder.")
        if args.family or args.out or args.invariances:
            raise EsslError("--family, --out and --invariances go with --scratch or --backbone-file; a run folder "
                            "knows its family and invariances and holds its results.")
        src = encoder_from_run(args.run_dir)
    finetune(src, args.data_root, settings, overwrite=args.overwrite, verbose=args.verbose)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    ft = {}
    if args.finetune_epochs:
        ft["epochs"] = args.finetune_epochs
    if args.n_train:
        ft["n_train"] = args.n_train
    if args.seeds:
        ft["seeds"] = list(args.seeds)
    if args.freeze_encoder:
        ft["freeze_encoder"] = True
    out = args.out or Path("runs") / f"phc-{args.family}-{args.budget}"
    run_experiment(args.family, args.data_root, out, args.budget, args.pretrain_epochs, args.set, ft,
                   args.scratch, progress=not args.no_progress)
    return 0
