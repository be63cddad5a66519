"""``essl pretrain`` and ``essl presets``."""

from __future__ import annotations

import argparse
from pathlib import Path

from essl.errors import EsslError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "pretrain",
        help="pretrain an encoder from a preset (with key=value overrides)",
        description="Pretrain with a preset plus overrides, e.g. `essl pretrain mnist5k-esimclr "
        "epochs=5 lr=0.1`, or continue a run with `essl pretrain --resume RUN_DIR`.",
    )
    p.add_argument("preset", nargs="?", help="preset name (`essl presets`) or path of a .yaml file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="settings that replace the preset's")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<preset>-<date>-<time>)")
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue the run in RUN_DIR from its checkpoint; KEY=VALUE after it changes settings that "
        "may change (epochs to extend the run, data_root, workers, device, knn and checkpoint "
        "settings; lr and precision with --allow-change); each change is recorded in the run folder",
    )
    p.add_argument(
        "--allow-change",
        action="store_true",
        help="with --resume: also allow lr, precision, compile and channels_last to change",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder given by --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pretrain)

    q = sub.add_parser("presets", help="list presets, or show one")
    q.add_argument("--show", metavar="NAME", help="print the preset's file")
    q.set_defaults(func=cmd_presets)


def cmd_pretrain(args: argparse.Namespace) -> int:
    from essl.training.config import list_presets, load_config, parse_overrides
    from essl.training.distributed import detect_env
    from essl.training.pretrain import pretrain

    if args.resume:
        items = ([args.preset] if args.preset else []) + list(args.overrides)
        if args.out or args.overwrite or any("=" not in item for item in items):
            raise EsslError(
                "--resume continues a run in its own folder with its stored settings; give the run "
                "folder and optionally settings to change, e.g. `essl pretrain --resume runs/x "
                "epochs=200` (no preset, --out or --overwrite)."
            )
        run_dir = pretrain(
            None,
            args.resume,
            resume=True,
            progress=not args.no_progress,
            changes=parse_overrides(items),
            allow_change=args.allow_change,
        )
    else:
        if not args.preset:
            raise EsslError(
                f"Name a preset, e.g. `essl pretrain mnist5k-esimclr`. Presets: {', '.join(list_presets())}."
            )
        if args.allow_change:
            raise EsslError("--allow-change goes with --resume RUN_DIR key=value.")
        cfg = load_config(args.preset, args.overrides)
        run_dir = pretrain(
            cfg, args.out, overwrite=args.overwrite, progress=not args.no_progress, preset_name=args.preset
        )
    if detect_env().is_main:
        print(f"run folder: {run_dir}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from essl.training.config import list_presets, preset_path, read_yaml

    if args.show:
        print(preset_path(args.show).read_text(), end="")
        return 0
    for name in list_presets():
        values = read_yaml(preset_path(name))
        eq = values.get("equivariance") or []
        tag = " + ".join(f"{e['group']} (λ={e['weight']})" for e in eq) or "-"
        print(
            f"{name:22s} {values.get('method', ''):13s} {values.get('dataset', ''):9s} "
            f"{values.get('backbone', ''):15s} predicts: {tag}"
        )
    return 0
