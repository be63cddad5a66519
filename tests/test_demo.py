"""`essl demo` end to end on a tiny budget: table, JSON and plot, numbers from the evaluators, folder safety."""

import json

import pytest
import torch

from essl.cli import main

torch.set_num_threads(1)


@pytest.mark.slow
def test_demo_writes_table_plot_and_evaluator_numbers(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--epochs", "1", "--subset", "256", "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "| SimCLR |" in printed and "| E-SimCLR |" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["SimCLR", "E-SimCLR"]
    for r, preset in zip(results["runs"], ("mnist5k-simclr", "mnist5k-esimclr")):
        knn = json.loads((out / preset / "eval" / "knn.json").read_text())
        probe = json.loads((out / preset / "eval" / "linear_lbfgs.json").read_text())
        assert r["knn_top1"] == knn["top1"] and r["linear_lbfgs_top1"] == probe["top1"]
        assert 10.0 < r["knn_top1"] <= 100.0  # one epoch on 256 digits is already above chance
    assert results["runs"][0]["rotation_pred_acc"] is None
    assert 0.0 <= results["runs"][1]["rotation_pred_acc"] <= 1.0
    table = (out / "results.md").read_text()
    assert table.startswith("MNIST-5k, small CNN, 1 epoch, seed 0, 256 training digits")
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")] == \
        ["| method", "| SimCLR", "| E-SimCLR"]
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["demo", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.parametrize("args, message", [(["--epochs", "0"], "--epochs"), (["--subset", "-1"], "subset"),
                                           (["--subset", "8"], "fewer than batch_size")])
def test_demo_bad_settings_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
