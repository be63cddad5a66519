"""Damaged run files and results that cannot be written: checkpoints with missing, mistyped or wrongly shaped
entries, checkpoints that hold pickled objects, a bad line in ``metrics.jsonl``, a malformed ``eval/*.json``,
an output folder that cannot be written, npy labels without training images."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from .harness import Case, both, cached, check, copy_in, params, tiny_run, write_file

RUN = copy_in(tiny_run, "run")
RESUME = ("pretrain", "--resume", "run", "epochs=2", "--no-progress")


def damage(change):
    """Setup: the tiny run, its checkpoint rewritten after ``change(ckpt)`` (weights-only types only)."""

    def setup(ws: Path) -> None:
        RUN(ws)
        path = ws / "run" / "checkpoint.pt"
        ckpt = torch.load(path, weights_only=True)
        change(ckpt)
        torch.save(ckpt, path)

    return setup


def set_(key, value):
    return damage(lambda c: c.__setitem__(key, value))


def drop(key):
    return damage(lambda c: c.pop(key))


def first_key(ckpt, prefix="projector."):
    return next(k for k in ckpt["model"] if k.startswith(prefix))


def _shape(c):
    c["model"][first_key(c)] = torch.zeros(3)


def _missing(c):
    c["model"].pop(first_key(c))


def _extra(c):
    c["model"]["projector.99.weight"] = torch.zeros(2)


def _not_tensor(c):
    c["model"][first_key(c)] = "weights"


def _groups(c):
    c["optimizer"]["param_groups"][0]["params"] = c["optimizer"]["param_groups"][0]["params"][:3]


def _buffer(c):
    next(iter(c["optimizer"]["state"].values()))["momentum_buffer"] = torch.zeros(7)


def _mid_epoch(c):
    c["step"] = c["epoch"] * c["steps_per_epoch"] - 1
    c["epoch"] -= 1


def file_bytes(data: bytes):
    def setup(ws: Path) -> None:
        RUN(ws)
        (ws / "run" / "checkpoint.pt").write_bytes(data)

    return setup


def truncated(ws: Path) -> None:
    RUN(ws)
    path = ws / "run" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:4096])


class Payload:
    """Unpickling this would run a command; weights-only reading must refuse it by name."""

    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def pickled(obj):
    def setup(ws: Path) -> None:
        RUN(ws)
        path = ws / "run" / "checkpoint.pt"
        ckpt = torch.load(path, weights_only=True)
        ckpt["extra"] = obj
        torch.save(ckpt, path)

    return setup


def metrics(text: str):
    return both(RUN, write_file("run/metrics.jsonl", text))


def eval_json(text: str):
    return both(RUN, write_file("run/eval/knn.json", text))


def npy_data(test_labels):
    def setup(ws: Path) -> None:
        rng = np.random.default_rng(0)
        for split, labels in (("train", np.arange(16) % 2), ("test", np.asarray(test_labels))):
            (ws / "arrays" / split).mkdir(parents=True)
            np.save(
                ws / "arrays" / split / "images.npy", rng.integers(0, 256, (len(labels), 3, 16, 16), dtype=np.uint8)
            )
            np.save(ws / "arrays" / split / "labels.npy", labels)

    return setup


def blocked_out(ws: Path) -> None:
    RUN(ws)
    (ws / "blocker").write_text("a file where the output folder should go\n")


SWEEP = (
    "sweep",
    "--out",
    "s",
    "--transforms",
    "hflip",
    "--seeds",
    "1",
    "epochs=1",
    "subset=64",
    "batch_size=32",
    "num_threads=1",
    "knn_every=0",
    "--no-progress",
)


def _build_sweep(path: Path) -> None:
    import contextlib
    import io

    from essl.cli import main

    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main([*SWEEP[:2], str(path), *SWEEP[3:]]) == 0


def sweep_with(change):
    """Setup: a finished tiny sweep as ``s``, its baseline run's result removed (so the sweep reads the run again)
    and ``change(s/baseline-seed0)`` applied."""

    def setup(ws: Path) -> None:
        copy_in(lambda: cached("sweep", _build_sweep), "s")(ws)
        run = ws / "s" / "baseline-seed0"
        (run / "eval" / "knn.json").unlink()
        change(run)

    return setup


def _truncate(run: Path) -> None:
    path = run / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:4096])


def _sweep_shape(run: Path) -> None:
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    _shape(ckpt)
    torch.save(ckpt, run / "checkpoint.pt")


CK = "checkpoint.pt"
DAMAGED = r"damaged.*intact copy"
CASES = [
    # --resume checks the checkpoint entry by entry before anything is written
    Case("resume-ckpt-no-model", RESUME, (CK, "'model'"), DAMAGED, drop("model")),
    Case("resume-ckpt-no-optimizer", RESUME, (CK, "'optimizer'"), DAMAGED, drop("optimizer")),
    Case("resume-ckpt-no-rng", RESUME, (CK, "'rng'"), DAMAGED, drop("rng")),
    Case("resume-ckpt-no-epoch", RESUME, (CK, "'epoch'"), DAMAGED, drop("epoch")),
    Case("resume-ckpt-epoch-text", RESUME, (CK, "'epoch'", "'one'"), DAMAGED, set_("epoch", "one")),
    Case("resume-ckpt-epoch-negative", RESUME, (CK, "'epoch'", "-4"), DAMAGED, set_("epoch", -4)),
    Case("resume-ckpt-epoch-beyond-epochs", RESUME, (CK, "'epoch'", "50"), DAMAGED, set_("epoch", 50)),
    Case("resume-ckpt-step-outside-epoch", RESUME, (CK, "'step'", "99"), DAMAGED, set_("step", 99)),
    Case("resume-ckpt-steps-per-epoch-zero", RESUME, (CK, "'steps_per_epoch'"), DAMAGED, set_("steps_per_epoch", 0)),
    Case("resume-ckpt-wrong-shape", RESUME, (CK, "projector.0.weight", "(3,)"), DAMAGED, damage(_shape)),
    Case("resume-ckpt-missing-weight", RESUME, (CK, "missing", "projector.0.weight"), DAMAGED, damage(_missing)),
    Case("resume-ckpt-unexpected-weight", RESUME, (CK, "unexpected", "projector.99.weight"), DAMAGED, damage(_extra)),
    Case(
        "resume-ckpt-weight-not-tensor",
        RESUME,
        (CK, "not a tensor", "projector.0.weight"),
        DAMAGED,
        damage(_not_tensor),
    ),
    Case("resume-ckpt-model-not-dict", RESUME, (CK, "'model'", "list"), DAMAGED, set_("model", [1, 2])),
    Case("resume-ckpt-optimizer-groups", RESUME, (CK, "'optimizer'", "[3]", "[25]"), DAMAGED, damage(_groups)),
    Case("resume-ckpt-optimizer-buffer", RESUME, (CK, "momentum_buffer", "(7,)"), DAMAGED, damage(_buffer)),
    Case("resume-ckpt-optimizer-not-state", RESUME, (CK, "'optimizer'"), DAMAGED, set_("optimizer", {"lr": 1})),
    Case("resume-ckpt-rng-not-bytes", RESUME, (CK, "'rng'"), DAMAGED, set_("rng", {"torch": torch.zeros(3)})),
    Case("resume-ckpt-config-text", RESUME, (CK, "'config'", "str"), DAMAGED, set_("config", "lr: 0.1")),
    Case(
        "resume-ckpt-config-invalid",
        RESUME,
        (CK, "'config'", "lr"),
        DAMAGED,
        damage(lambda c: c["config"].update(lr=-1)),
    ),
    Case("resume-ckpt-mid-epoch-no-sums", RESUME, (CK, "'partial'"), DAMAGED, damage(_mid_epoch)),
    Case("resume-ckpt-truncated", RESUME, (CK, "corrupt"), r"another copy", truncated),
    Case("resume-ckpt-empty", RESUME, (CK, "corrupt"), r"another copy", file_bytes(b"")),
    Case("resume-ckpt-text", RESUME, (CK, "corrupt"), r"another copy", file_bytes(b"not a checkpoint\n")),
    # pickled objects: refused by name, with advice that never disables weights-only reading
    Case(
        "resume-ckpt-numpy-array",
        RESUME,
        (CK, "`numpy._core.multiarray._reconstruct`"),
        r"plain state dict",
        pickled(np.zeros(3)),
    ),
    Case("resume-ckpt-pickle-payload", RESUME, (CK, "`posix.system`"), r"plain state dict", pickled(Payload())),
    Case("knn-ckpt-pickle-payload", ("knn", "run"), (CK, "`posix.system`"), r"plain state dict", pickled(Payload())),
    # the same checker in every command that reads a run's checkpoint
    Case("knn-ckpt-wrong-shape", ("knn", "run"), (CK, "projector.0.weight"), DAMAGED, damage(_shape)),
    Case("knn-ckpt-epoch-text", ("knn", "run"), (CK, "'epoch'"), DAMAGED, set_("epoch", "one")),
    Case("probe-ckpt-no-model", ("probe", "run"), (CK, "'model'"), DAMAGED, drop("model")),
    Case("finetune-ckpt-missing-weight", ("finetune", "run"), (CK, "projector.0.weight"), DAMAGED, damage(_missing)),
    Case("export-ckpt-truncated", ("export", "run", "exported"), (CK, "corrupt"), r"another copy", truncated),
    # metrics.jsonl and eval/*.json
    Case(
        "report-metrics-bad-line",
        ("report", "run"),
        ("metrics.jsonl", "line 2"),
        r"repair",
        metrics('{"epoch": 1}\n{"epoch": 2, "lo\n'),
    ),
    Case(
        "report-metrics-list-line",
        ("report", "run"),
        ("metrics.jsonl", "line 1", "list"),
        r"repair",
        metrics("[1, 2]\n"),
    ),
    Case(
        "report-metrics-no-epoch",
        ("report", "run"),
        ("metrics.jsonl", "row 1", "epoch"),
        r"repair",
        metrics('{"loss": 1.0}\n'),
    ),
    Case(
        "report-metrics-binary",
        ("report", "run"),
        ("metrics.jsonl", "UTF-8"),
        r"delete it",
        both(RUN, write_file("run/metrics.jsonl", b"\xff\xfe\x00")),
    ),
    Case("resume-metrics-bad-line", RESUME, ("metrics.jsonl", "line 1"), r"repair", metrics("{oops\n")),
    Case(
        "report-eval-json-bad",
        ("report", "run"),
        ("knn.json", "not valid JSON"),
        r"delete it",
        eval_json('{"top1": \n'),
    ),
    Case("report-eval-json-list", ("report", "run"), ("knn.json", "list"), r"delete it", eval_json("[1, 2]\n")),
    Case("export-eval-json-bad", ("export", "run", "exported"), ("knn.json",), r"delete it", eval_json("{")),
    # the sweep's run lifecycle reads the same files the same way
    Case(
        "sweep-ckpt-truncated",
        SWEEP,
        ("baseline-seed0/checkpoint.pt", "corrupt"),
        r"another copy",
        sweep_with(_truncate),
    ),
    Case(
        "sweep-ckpt-wrong-shape",
        SWEEP,
        ("baseline-seed0/checkpoint.pt", "projector.0.weight"),
        DAMAGED,
        sweep_with(_sweep_shape),
    ),
    Case(
        "sweep-metrics-bad-line",
        SWEEP,
        ("baseline-seed0/metrics.jsonl", "line 1"),
        r"repair",
        sweep_with(lambda run: (run / "metrics.jsonl").write_text("{oops\n")),
    ),
    Case(
        "sweep-eval-json-bad",
        SWEEP,
        ("baseline-seed0/eval/knn.json", "not valid JSON"),
        r"delete it",
        sweep_with(lambda run: (run / "eval" / "knn.json").write_text('{"top1": ')),
    ),
    # a result computed but not writable: printed in full, exit non-zero
    Case(
        "knn-result-not-writable",
        ("knn", "run", "--out", "blocker/x"),
        ("blocker/x/eval/knn.json", '"top1"', "could not be saved"),
        r"standard output",
        blocked_out,
    ),
    Case(
        "probe-result-not-writable",
        ("probe", "run", "--out", "blocker/x"),
        ("blocker/x/eval/", '"top1"', "could not be saved"),
        r"standard output",
        blocked_out,
    ),
    Case(
        "diagnose-result-not-writable",
        ("diagnose", "run", "--out", "blocker/x", "--max-train", "16"),
        ("blocker/x/eval/diagnostics", '"evaluation": "diagnostics"', "could not be saved"),
        r"standard output",
        blocked_out,
    ),
    Case(
        "finetune-result-not-writable",
        ("finetune", "run", "--out", "blocker/x", "--epochs", "1"),
        ("blocker/x/eval/finetune", '"evaluation": "finetune"', "could not be saved"),
        r"standard output",
        blocked_out,
    ),
    Case("export-out-in-a-file", ("export", "run", "blocker/x"), ("blocker", "not a folder"), r"choose", blocked_out),
    # released files and warm starts go through the same weights-only reader
    Case(
        "knn-backbone-file-pickled",
        ("knn", "--backbone-file", "w.pth", "--dataset", "folder", "--data-root", "data"),
        ("w.pth", "`posix.system`"),
        r"plain state dict",
        lambda ws: torch.save({"conv1.weight": torch.zeros(1), "x": Payload()}, ws / "w.pth"),
    ),
    Case(
        "init-from-pickled",
        (
            "pretrain",
            "mnist5k-simclr",
            "epochs=1",
            "subset=64",
            "batch_size=32",
            "init_from=w.pth",
            "--out",
            "r",
            "--no-progress",
        ),
        ("w.pth", "`numpy._core.multiarray._reconstruct`"),
        r"plain state dict",
        lambda ws: torch.save({"backbone": {"conv1.weight": np.zeros(2)}}, ws / "w.pth"),
    ),
    # npy: test labels that the training split never has
    Case(
        "npy-test-label-unseen",
        ("knn", "run", "--dataset", "npy", "--data-root", "arrays", "--image-size", "16"),
        ("labels.npy", "5", "7"),
        r"same class indices",
        both(RUN, npy_data([0, 1, 5, 7, 1, 0])),
    ),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, tmp_path):
    r = check(case, tmp_path)
    assert not (tmp_path / "PWNED").exists()  # no pickle payload ever runs
    assert "weights_only" not in r.output  # never torch's advice to load the file with weights_only=False
