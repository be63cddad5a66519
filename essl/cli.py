"""The ``essl`` command-line tool.

Each sub-command lives next to the code it drives and adds itself with a ``register(subparsers)`` function
listed in :data:`COMMAND_MODULES`. Errors the user can fix (:class:`EsslError`) are printed without a traceback
and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from essl import __version__
from essl.errors import EsslError, Interrupted, Preempted, ResultNotSaved, os_failure, os_reason
from essl.extras import MissingExtra

COMMAND_MODULES = [
    "essl.training.commands",  # pretrain, presets
    "essl.evaluation.commands",  # knn, probe, finetune, diagnose, report
    "essl.experiments.commands",  # demo, sweep, export
    "essl.photonics.commands",  # phc generate | label | merge | finetune | experiment
]
#: command families behind an optional extra: module -> its command, still listed (with an error naming the
#: extra to install) when the extra is missing
OPTIONAL_COMMANDS = {"essl.photonics.commands": "phc"}


def positive_int(text: str) -> int:
    """argparse type for counts that must be >= 1 (argparse reports the message as a usage error)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="essl", description="Equivariant self-supervised learning (E-SSL).")
    parser.add_argument("--version", action="version", version=f"essl {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # a command family not present in this build
            raise
        except MissingExtra as exc:  # an optional extra is not installed (essl.extras.require_extra)
            if name not in OPTIONAL_COMMANDS:
                raise
            _register_unavailable(sub, OPTIONAL_COMMANDS[name], exc)
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, command: str, exc: MissingExtra) -> None:
    """List ``command`` anyway; running it (with any arguments) prints ``exc``, which names the extra."""
    p = sub.add_parser(
        command, help=f"(not installed: pip install 'essl[{exc.extra}]')", add_help=False, prefix_chars="\x00"
    )  # every argument, --help too, reaches the error below
    p.add_argument("args", nargs=argparse.REMAINDER)

    def unavailable(args: argparse.Namespace) -> int:
        raise exc

    p.set_defaults(func=unavailable)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if (
        extra
        and isinstance(getattr(args, "overrides", None), list)
        and all("=" in e and not e.startswith("-") for e in extra)
    ):
        args.overrides += extra  # `essl pretrain P --no-progress epochs=1`: settings after an option
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        from essl.training.validation import check_options

        command = " ".join(filter(None, (args.command, getattr(args, "phc_command", None))))
        check_options(command, vars(args))  # every numeric option against its rule, before anything runs
        return int(args.func(args) or 0)
    except EsslError as exc:
        if isinstance(exc, ResultNotSaved):  # computed but not written: the result itself, so it is not lost
            print(exc.text, end="", flush=True)
        print(f"essl: error: {exc}", file=sys.stderr)
        return 2
    except Preempted as exc:  # SIGTERM with step checkpoints on: the checkpoint is written
        print(f"essl: {exc}", file=sys.stderr)
        return 143
    except BrokenPipeError:  # e.g. `essl report ... | head`: the reader went away, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python exits
        return 0
    except KeyboardInterrupt as exc:  # Interrupted says what was kept; a bare Ctrl-C left no half-written file
        note = str(exc) if isinstance(exc, Interrupted) and str(exc) else getattr(args, "interrupted", "")
        print(f"essl: interrupted{'; ' + note if note else '.'}", file=sys.stderr)
        return 130
    except OSError as exc:  # an OS failure no command turned into a message of its own
        err = os_failure(exc)
        where = f" {err.filename}" if err is not None and err.filename else ""
        print(
            f"essl: error: operating-system failure on{where or ' a file'}: {os_reason(exc)}. Fix the cause "
            f"(free space, permissions, a writable folder) and run the command again.",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
