"""``essl --help`` and every ``essl <command> --help`` build their parsers without importing torch or kornia.

The parsers are built from light modules (the catalogs, the presets' yaml files); the heavy modules are imported
by the ``cmd_*`` handlers when a command runs (CONTRIBUTING.md). Checked in a fresh interpreter, whose
``sys.modules`` shows what the help texts imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from essl.extras import MissingExtra, require_extra

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import argparse, contextlib, io, json, sys
from essl.cli import build_parser, main

HEAVY = ("torch", "kornia")


def commands(parser, prefix=()):
    yield prefix
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from commands(sub, prefix + (name,))


report = {}
for command in list(commands(build_parser())):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        try:
            main([*command, "--help"])
        except SystemExit:
            pass
    report[" ".join(command)] = {"help": out.getvalue(), "heavy": [m for m in HEAVY if m in sys.modules]}
print(json.dumps(report))
"""


def _help_texts() -> dict[str, dict]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env, timeout=120, check=True
    )
    return json.loads(done.stdout)


def _phc_installed() -> bool:
    try:
        require_extra("phc")
    except MissingExtra:
        return False
    return True


def test_help_of_every_command_imports_no_torch():
    report = _help_texts()
    top = {c for c in report if c and " " not in c}
    assert {"pretrain", "presets", "knn", "probe", "report", "demo", "sweep", "export", "phc"} <= top
    if _phc_installed():
        assert {"phc generate", "phc finetune", "phc experiment"} <= set(report)
    else:  # listed, and `essl phc --help` is the error naming the extra (tests/test_packaging.py)
        del report["phc"]
    for command, seen in report.items():
        line = " ".join(filter(None, ["essl", command, "--help"]))
        assert seen["help"].startswith(" ".join(filter(None, ["usage: essl", command]))), line
        assert seen["heavy"] == [], f"`{line}` imported {seen['heavy']}"
