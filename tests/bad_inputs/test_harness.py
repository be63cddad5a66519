"""The harness itself: each outcome is recognised (so that a case that should fail does)."""

from .harness import Case, Result, classify, run_case, write_file

CASE = Case("x", ("knn",), names=("--k",))


def test_outcomes_are_told_apart():
    clear = "essl: error: --k must be at least 1, got 0."
    assert classify(Result(CASE, 2, clear)) == "clear"
    assert classify(Result(CASE, 2, "essl: error: something is wrong")) == "misleading"  # does not name --k
    assert classify(Result(CASE, 2, "essl: error: --k is 0")) == "misleading"  # names it, no advice
    assert classify(Result(CASE, 0, "kNN top-1 10%")) == "silent"
    assert classify(Result(CASE, 2, clear, created=["run/eval/knn.json"])) == "wrote"
    assert classify(Result(CASE, 1, "Traceback (most recent call last):\n  ValueError")) == "traceback"
    assert classify(Result(CASE, 1, "", escaped="Traceback ...")) == "traceback"
    assert classify(Result(CASE, 2, clear, changed=["data/train/c0/0.png"])) == "lost"
    assert classify(Result(Case("y", (), ("--k",), fix="k=5"), 2, clear)) == "misleading"  # its own advice


def test_run_case_sees_changes_and_new_files(tmp_path):
    # `essl presets` succeeds: silent; a preset file given to pretrain whose --out exists as a file: untouched
    r = run_case(Case("presets", ("presets",), ("x",)), tmp_path / "a")
    assert r.code == 0 and r.outcome == "silent" and "mnist5k-simclr" in r.output
    r = run_case(
        Case("out-is-file", ("pretrain", "mnist5k-simclr", "--out", "f"), ("f",), setup=write_file("f", "keep me")),
        tmp_path / "b",
    )
    assert r.outcome == "clear", r.explain()
    assert (tmp_path / "b" / "f").read_text() == "keep me"
