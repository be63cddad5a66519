"""Machine-readable evaluation results: one JSON file per evaluation in ``RUN_DIR/eval/``.

Each file states the protocol (name and settings), the checkpoint evaluated (path, epoch), the seeds and the
numbers, so that every figure in a report can be traced to how it was produced.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from essl import __version__


def write_result(run_dir: Path | str, name: str, payload: dict[str, Any]) -> Path:
    """Write ``RUN_DIR/eval/<name>.json`` atomically and return its path."""
    out_dir = Path(run_dir) / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"essl_version": __version__, "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              **payload}
    path = out_dir / f"{name}.json"
    tmp = out_dir / f".{name}.json.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_results(run_dir: Path | str) -> dict[str, dict[str, Any]]:
    """All results of a run folder, keyed by file stem."""
    out_dir = Path(run_dir) / "eval"
    return {p.stem: json.loads(p.read_text()) for p in sorted(out_dir.glob("*.json"))} if out_dir.is_dir() else {}
