"""``essl phc ...``: generate, label and merge photonic-crystal datasets; fine-tune encoders on them
(:mod:`essl.evaluation.photonics`) and run the paper's photonics experiment (:mod:`essl.experiments.photonics`).

The main ``essl`` command calls :func:`register` with its sub-parser collection and later runs
``args.func(args)``, which returns an exit code.  User errors raise
:class:`essl.errors.EsslError`; nothing that exists is overwritten.

Examples::

    essl phc generate --dataset gpm --out-dir data/phc            # mf1-sg3-tm.h5 (9800 labels)
    essl phc generate --dataset blob-ul --out-dir data/phc        # images only, minutes
    essl phc generate --family p1 --n 200 --seed 3 --out-dir tmp  # any family / range
    essl phc label cells.npy dos.npy                              # (N,32,32) -> (N,500)
    essl phc merge data/phc/mf1-sg3-tm.shards --out data/phc/mf1-sg3-tm.h5
    essl phc finetune runs/phc-gpm-esimclr --data-root data/phc   # relative DOS error
    essl phc experiment --family gpm --data-root data/phc         # the photonics table
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from essl.catalog import CHECKPOINT_PROTOCOLS
from essl.cli import positive_int
from essl.errors import EsslError
from essl.experiments.catalog import BUDGETS
from essl.photonics.cells import FAMILIES
from essl.photonics.h5io import DATASETS

if TYPE_CHECKING:
    from essl.photonics.label import LabelConfig

__all__ = ["cmd_generate", "cmd_label", "cmd_merge", "cmd_finetune", "cmd_experiment", "register"]


def _add_label_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--pw-cutoff",
        type=float,
        default=10.0,
        metavar="M",
        help="plane-wave cutoff |G| <= M (10 -> 317 plane waves; 7 is faster and ~0.4%% less accurate) [10]",
    )
    p.add_argument("--nbands", type=positive_int, default=10, help="bands [10]")
    p.add_argument("--nk", type=positive_int, default=25, help="k-grid size per axis [25]")
    p.add_argument(
        "--method",
        choices=("auto", "dense", "subspace"),
        default="auto",
        help="eigensolver strategy (see essl.photonics.solver) [auto]",
    )
    p.add_argument("--workers", type=positive_int, default=1, help="worker processes, one BLAS thread each [1]")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _label_config(args: argparse.Namespace) -> LabelConfig:
    from essl.photonics.label import LabelConfig
    from essl.photonics.solver import plane_wave_orders

    waves = len(plane_wave_orders(args.pw_cutoff))  # the range of --pw-cutoff is checked with every option
    if args.nbands > waves:
        raise EsslError(
            f"--nbands {args.nbands} is more than the {waves} plane waves of --pw-cutoff "
            f"{args.pw_cutoff:g}; lower --nbands or raise --pw-cutoff."
        )
    return LabelConfig(cutoff=args.pw_cutoff, nbands=args.nbands, nk=args.nk, method=args.method)


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``phc`` command (``generate``, ``label``, ``merge``, ``finetune``, ``experiment``)."""
    phc = subparsers.add_parser(
        "phc",
        help="photonic-crystal DOS datasets and the photonics experiment",
        description="Photonic-crystal unit cells and their density of states: generate and label datasets, "
        "fine-tune encoders on DOS regression, run the paper's photonics experiment.",
    )
    sub = phc.add_subparsers(dest="phc_command", metavar="COMMAND")
    sub.required = True

    presets = ", ".join(
        f"{s.name} ({s.file}, {s.count} {'labelled' if s.labels else 'images'})" for s in DATASETS.values()
    )
    gen = sub.add_parser(
        "generate",
        help="generate unit cells (and DOS labels) into an h5 file",
        description="Generate unit cells and DOS labels in the E-SSL h5 layout. Work is split "
        "into shard files that are resumed when the command is run again; the "
        f"shards are then merged into one file. Presets: {presets}.",
    )
    gen.add_argument(
        "--dataset",
        choices=sorted(DATASETS),
        help="preset: family, index range, seed, labels and file name of an E-SSL file (other options override it)",
    )
    gen.add_argument("--family", choices=sorted(FAMILIES), help="cell family")
    gen.add_argument("--n", type=positive_int, help="number of samples")
    gen.add_argument("--start-index", type=positive_int, help="first (1-based) index [1]")
    gen.add_argument("--seed", type=int, help="dataset seed [preset's, else 0]")
    gen.add_argument(
        "--labels",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compute DOS labels (--no-labels: images and epsavg only) [labels]",
    )
    gen.add_argument(
        "--supersample", type=positive_int, default=8, help="anti-aliasing sub-samples per pixel and axis [8]"
    )
    gen.add_argument(
        "--store-bands",
        action="store_true",
        help="also store the band structures in the official layout (mpbcal/efreq, emptylattice, "
        "eldiff: 625 k-points x bands) for `essl phc finetune --target bands`",
    )
    gen.add_argument("--out-dir", default=".", help="output folder [.]")
    gen.add_argument("--out-file", help="output file name [preset's original name]")
    gen.add_argument("--shard-size", type=int, default=1000, help="samples per shard file, 0 for one shard [1000]")
    gen.add_argument("--no-merge", action="store_true", help="only write shards (merge later with `essl phc merge`)")
    _add_label_options(gen)
    gen.set_defaults(
        func=cmd_generate,
        interrupted="finished shards and the cells already in .partial shards "
        "are kept: run the same command again to continue",
    )

    lab = sub.add_parser(
        "label",
        help="compute DOS labels of an (N,32,32) .npy array of permittivities",
        description="Label permittivity images: IMAGES.npy holds an (N,32,32) float array with "
        "values in [1,20]; OUT.npy receives the (N,500) float32 mpbcal/DOS labels.",
    )
    lab.add_argument("images", help="input .npy file, shape (N, 32, 32)")
    lab.add_argument("out", help="output .npy file (must not exist)")
    _add_label_options(lab)
    lab.set_defaults(func=cmd_label, interrupted="no output file was written")

    mrg = sub.add_parser(
        "merge",
        help="merge shard files into one h5 file",
        description="Merge complete shards (files, or folders of shard-*.h5) into the single-file E-SSL layout.",
    )
    mrg.add_argument("shards", nargs="+", help="shard files or shard folders")
    mrg.add_argument("--out", required=True, help="merged file (must not exist)")
    mrg.add_argument("--expect-start", type=positive_int, help="with --expect-n: require exactly this index range")
    mrg.add_argument("--expect-n", type=positive_int)
    mrg.set_defaults(func=cmd_merge, interrupted="the merged file was not written; the shards are unchanged")
    _add_finetune_and_experiment(sub)
    return phc


def cmd_generate(args: argparse.Namespace) -> int:
    """Handler of ``essl phc generate``."""
    from essl.photonics.generate import GenerationSpec, generate

    preset = DATASETS[args.dataset] if args.dataset else None
    family = args.family or (preset.family if preset else None)
    count = args.n or (preset.count if preset else None)
    if family is None or count is None:
        raise EsslError("give --dataset, or --family and --n")
    start = args.start_index or (preset.start if preset else 1)
    seed = args.seed if args.seed is not None else (preset.seed if preset else 0)
    labels = args.labels if args.labels is not None else (preset.labels if preset else True)
    spec = GenerationSpec(
        family=family,
        seed=seed,
        labels=labels,
        supersample=args.supersample,
        store_bands=args.store_bands,
        label=_label_config(args),
    )
    out = generate(
        spec,
        start,
        count,
        args.out_dir,
        file_name=args.out_file,
        shard_size=args.shard_size,
        workers=args.workers,
        merge=not args.no_merge,
        progress=not args.no_progress,
    )
    if out is not None:
        print(f"wrote {out}")
    return 0


def _load_images(path: Path) -> np.ndarray:
    if not path.is_file():
        raise EsslError(f"input file {path} does not exist (expected an (N, 32, 32) .npy array)")
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise EsslError(
            f"cannot read {path} as a .npy array ({err}); expected an (N, 32, 32) float array saved with numpy.save"
        ) from None
    if not isinstance(arr, np.ndarray):
        raise EsslError(f"{path} is an .npz archive; expected a single (N, 32, 32) .npy array")
    return arr


def cmd_label(args: argparse.Namespace) -> int:
    """Handler of ``essl phc label IMAGES.npy OUT.npy``."""
    from essl.photonics.label import label_images
    from essl.runs import write_atomic

    out = Path(args.out)
    if out.exists():
        raise EsslError(f"output {out} already exists; it is left untouched: delete it or choose another name")
    if not out.parent.is_dir():
        raise EsslError(f"output folder {out.parent} does not exist")
    config = _label_config(args)
    images = _load_images(Path(args.images))
    labels = label_images(images, config, workers=args.workers, progress=not args.no_progress)
    if out.exists():
        raise EsslError(f"output {out} appeared while labelling; it is left untouched")
    write_atomic(out, lambda fh: np.save(fh, labels))
    print(f"wrote {out} ({labels.shape[0]} x {labels.shape[1]} float32)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    """Handler of ``essl phc merge``."""
    from essl.photonics.generate import merge_shards

    paths: list[Path] = []
    for item in map(Path, args.shards):
        if item.is_dir():
            found = sorted(item.glob("shard-*.h5"))
            if not found:
                raise EsslError(f"no complete shard-*.h5 files in {item}")
            paths += found
        elif item.is_file():
            paths.append(item)
        else:
            raise EsslError(f"shard {item} does not exist")
    expect = None
    if (args.expect_start is None) != (args.expect_n is None):
        raise EsslError("give both --expect-start and --expect-n, or neither")
    if args.expect_start is not None:
        expect = range(args.expect_start, args.expect_start + args.expect_n)
    out = merge_shards(paths, Path(args.out), expect)
    print(f"wrote {out}")
    return 0


def _add_finetune_and_experiment(phc_subparsers: Any) -> None:
    """``essl phc finetune`` (:mod:`essl.evaluation.photonics`) and ``essl phc experiment``
    (:mod:`essl.experiments.photonics`)."""
    ft = phc_subparsers.add_parser(
        "finetune",
        help="fine-tune a photonics encoder on DOS regression (relative DOS error)",
        description="Fine-tune the encoder of a pretraining run (or a random one, --scratch) with the paper's "
        "protocol: MLP 1024-1024-1024-512-400, MSE on y - EL, Adam 1e-4, batch 64. Reports the relative "
        "L1 DOS error as the MINIMUM OVER EPOCHS ON THE TEST SET (the paper's protocol; optimistic), "
        "and the error after the last epoch; mean ± std over fine-tuning seeds. By default (--protocol "
        "official) both kept checkpoints of the run (after (E-1)//2 and E-1 of its E epochs: EP100 and EP200 "
        "of a 201-epoch run) are fine-tuned and each seed reports the minimum over epochs AND checkpoints, "
        "as the official code: RUN_DIR/eval/phc-finetune-n<N>-e<E>-official.json (and one result per "
        "checkpoint). --protocol last (or --checkpoint NAME) fine-tunes one checkpoint: "
        "RUN_DIR/eval/phc-finetune-n<N>-e<E>.json.",
    )
    ft.add_argument("run_dir", nargs="?", type=Path, help="run folder of `essl pretrain phc-...`")
    ft.add_argument("--data-root", help="folder with the labelled h5 files [the run's data_root]")
    ft.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="fine-tuning seeds [1 2 3]")
    ft.add_argument("--epochs", type=positive_int, default=100, help="fine-tuning epochs [100]")
    ft.add_argument("--n-train", type=positive_int, default=3000, help="labelled cells, drawn once with seed 1 [3000]")
    ft.add_argument("--batch-size", type=positive_int, default=64, help="[64]")
    ft.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate [1e-4]")
    ft.add_argument(
        "--freeze-encoder",
        action="store_true",
        help="train the DOS head only (official --freeze_enc_ft; BatchNorm statistics still update)",
    )
    ft.add_argument(
        "--target",
        choices=("dos", "bands"),
        default="dos",
        help="regress the DOS (the paper's) or the band structures (official predict='bandstructures'; "
        "needs files generated with --store-bands; metric: the official calpercloss) [dos]",
    )
    ft.add_argument("--nbands", type=positive_int, default=10, help="with --target bands: bands predicted [10]")
    ft.add_argument(
        "--checkpoint",
        metavar="NAME|PATH",
        help="fine-tune a kept milestone of RUN_DIR (e.g. epoch_0100; see keep_checkpoints) instead of "
        "the last checkpoint; the result is named ...-epoch_0100.json",
    )
    ft.add_argument(
        "--protocol",
        choices=CHECKPOINT_PROTOCOLS,
        help="official: fine-tune the run's two kept checkpoints after (E-1)//2 and E-1 epochs and keep the "
        "better per seed (test-set selection, as the official code); last: one checkpoint [official for "
        "RUN_DIR; one encoder with --checkpoint, --scratch, --backbone-file]",
    )
    ft.add_argument("--scratch", action="store_true", help="fine-tune a randomly initialised encoder instead")
    ft.add_argument(
        "--backbone-file",
        type=Path,
        metavar="PATH",
        help="fine-tune an encoder file instead: an official photonics checkpoint (EP100/EP200 of "
        "rdangovs/essl photonics/main.py, keys enc.enc_block2d.*) or an essl encoder state dict",
    )
    ft.add_argument("--family", choices=("gpm", "blob"), help="with --scratch / --backbone-file: the dataset family")
    ft.add_argument("--backbone", default="phc_cnn", help="with --scratch: phc_cnn or phc_cnn_small [phc_cnn]")
    ft.add_argument(
        "--invariances",
        nargs="+",
        metavar="GROUP",
        help="with --scratch / --backbone-file: fine-tuning augmentations [the family's: gpm roll flip, "
        "blob flip rotation]",
    )
    ft.add_argument("--out", type=Path, help="with --scratch / --backbone-file: folder for the result")
    ft.add_argument("--overwrite", action="store_true", help="replace an existing result of the same name")
    ft.add_argument("--verbose", action="store_true", help="print the test error of every epoch")
    ft.set_defaults(func=cmd_finetune)

    ex = phc_subparsers.add_parser(
        "experiment",
        help="pretrain SimCLR, SimCLR + Transform and E-SimCLR, fine-tune each, print the table",
        description="The paper's photonics experiment for one family: pretrain the three presets "
        "phc-<family>-{simclr,simclr-transform,esimclr}, fine-tune every encoder with 3 seeds and "
        "write OUT/phc-<family>-results.{md,json}. Resumable: rerun the same command to continue.",
    )
    ex.add_argument("--family", required=True, choices=("gpm", "blob"))
    ex.add_argument("--data-root", required=True, help="folder with the unlabelled and labelled h5 files")
    ex.add_argument(
        "--budget",
        default="small",
        choices=sorted(BUDGETS),
        help="small: CPU-sized (see docs/photonics.md); paper: the paper's settings [small]",
    )
    ex.add_argument("--out", type=Path, help="experiment folder [runs/phc-<family>-<budget>-<protocol>]")
    ex.add_argument("--pretrain-epochs", type=positive_int, help="override the budget's pretraining epochs")
    ex.add_argument("--finetune-epochs", type=positive_int, help="override the budget's fine-tuning epochs")
    ex.add_argument("--n-train", type=positive_int, help="override the budget's labelled-set size")
    ex.add_argument("--seeds", type=int, nargs="+", help="fine-tuning seeds [1 2 3]")
    ex.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="more pretraining overrides for all three presets (e.g. batch_size=64)",
    )
    ex.add_argument(
        "--protocol",
        choices=CHECKPOINT_PROTOCOLS,
        default="official",
        help="official: pretrain N+1 epochs (one cosine), keep the checkpoints after N//2 and N, fine-tune both "
        "and keep the better per seed (test-set selection, as the official code; N = 200 for the paper); "
        "last: pretrain N epochs, fine-tune the last checkpoint [official]",
    )
    ex.add_argument("--scratch", action="store_true", help="also fine-tune a randomly initialised encoder")
    ex.add_argument(
        "--freeze-encoder", action="store_true", help="fine-tune the DOS head only (official --freeze_enc_ft)"
    )
    ex.add_argument("--no-progress", action="store_true", help="no progress bars")
    ex.set_defaults(func=cmd_experiment)


def cmd_finetune(args: argparse.Namespace) -> int:
    """Handler of ``essl phc finetune``."""
    from essl.evaluation.photonics import (
        FinetuneSettings,
        encoder_from_file,
        encoder_from_run,
        encoder_from_scratch,
        finetune,
        finetune_official,
    )

    settings = FinetuneSettings(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        n_train=args.n_train,
        seeds=list(args.seeds),
        freeze_encoder=args.freeze_encoder,
        target=args.target,
        nbands=args.nbands,
    )
    settings.validate()
    sources = [
        name
        for name, given in (
            ("RUN_DIR", args.run_dir is not None),
            ("--scratch", args.scratch),
            ("--backbone-file", args.backbone_file is not None),
        )
        if given
    ]
    if len(sources) > 1:
        raise EsslError(
            f"Give one encoder: RUN_DIR (a pretrained run), --scratch (a random one) or --backbone-file "
            f"PATH; got {' and '.join(sources)}."
        )
    one = [s for s in sources if s != "RUN_DIR"] + (["--checkpoint"] if args.checkpoint else [])  # one encoder
    protocol = args.protocol or ("last" if one else "official")
    if protocol == "official" and one:
        raise EsslError(
            f"--protocol official fine-tunes the two kept checkpoints of RUN_DIR; {' and '.join(one)} names one "
            f"encoder. Drop --protocol official (one encoder is --protocol last)."
        )
    if args.checkpoint and args.run_dir is None:
        raise EsslError(
            "--checkpoint picks a kept checkpoint of RUN_DIR (e.g. epoch_0100); it does not go with "
            "--scratch or --backbone-file."
        )
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
            raise EsslError(
                "Name the run folder to fine-tune, e.g. `essl phc finetune runs/phc-gpm-esimclr "
                "--data-root data/phc`, or pass --scratch for a random encoder."
            )
        if args.family or args.out or args.invariances:
            raise EsslError(
                "--family, --out and --invariances go with --scratch or --backbone-file; a run folder "
                "knows its family and invariances and holds its results."
            )
        if protocol == "official":
            finetune_official(args.run_dir, args.data_root, settings, overwrite=args.overwrite, verbose=args.verbose)
            return 0
        src = encoder_from_run(args.run_dir, args.checkpoint)
    finetune(src, args.data_root, settings, overwrite=args.overwrite, verbose=args.verbose)
    return 0


def cmd_experiment(args: argparse.Namespace) -> int:
    """Handler of ``essl phc experiment``."""
    from essl.experiments.photonics import run_experiment

    ft = {}
    if args.finetune_epochs:
        ft["epochs"] = args.finetune_epochs
    if args.n_train:
        ft["n_train"] = args.n_train
    if args.seeds:
        ft["seeds"] = list(args.seeds)
    if args.freeze_encoder:
        ft["freeze_encoder"] = True
    out = args.out or Path("runs") / f"phc-{args.family}-{args.budget}-{args.protocol}"
    run_experiment(
        args.family,
        args.data_root,
        out,
        args.budget,
        args.pretrain_epochs,
        args.set,
        ft,
        args.scratch,
        progress=not args.no_progress,
        protocol=args.protocol,
    )
    return 0
