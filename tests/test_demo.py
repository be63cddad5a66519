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
    assert "| SimCLR |" in printed and "| E-SimCLR |" in printed and "| SimCLR, equal compute |" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["SimCLR", "E-SimCLR", "SimCLR, equal compute"]
    folders = ("mnist5k-simclr-seed0", "mnist5k-esimclr-seed0", "mnist5k-simclr-equal-compute-seed0")
    for r, folder in zip(results["runs"], folders):
        knn = json.loads((out / folder / "eval" / "knn.json").read_text())
        probe = json.loads((out / folder / "eval" / "linear_lbfgs.json").read_text())
        assert r["knn_top1"] == knn["top1"] and r["linear_lbfgs_top1"] == probe["top1"]
        assert 10.0 < r["knn_top1"] <= 100.0  # one epoch on 256 digits is already above chance
        metrics = [json.loads(line) for line in (out / folder / "metrics.jsonl").read_text().splitlines()]
        assert r["pretrain_seconds"] == pytest.approx(sum(m["epoch_time_s"] for m in metrics))
        assert len(metrics) == r["epochs"]
    base, essl, equal = results["runs"]
    assert base["rotation_pred_acc"] is None and equal["rotation_pred_acc"] is None
    assert 0.0 <= essl["rotation_pred_acc"] <= 1.0
    # 2 SSL views of 28 px; + 4 rotations of a 20-px crop: 2 + 4 (20/28)^2
    assert base["backbone_passes"] == {"grad": 2.0, "no_grad": 0.0}
    assert essl["backbone_passes"]["grad"] == pytest.approx(2 + 4 * (20 / 28) ** 2)
    # the equal-compute baseline gets the E- run's measured time
    assert equal["epochs"] == max(1, round(essl["pretrain_seconds"] / base["pretrain_seconds"]))
    table = (out / "results.md").read_text()
    assert table.startswith("MNIST-5k, small CNN, 1 epoch, seed 0, 256 training digits")
    assert [line.split(" | ")[0] for line in table.splitlines() if line.startswith("| ")] == [
        "| method",
        "| SimCLR",
        "| E-SimCLR",
        "| SimCLR, equal compute",
    ]
    assert "backbone passes" in table and "4.04" in table
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert main(["demo", "--epochs", "1", "--out", str(out), "--no-progress"]) == 2  # exists: refused
    assert "already exists" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == before


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "0"], "--epochs"),
        (["--subset", "-1"], "subset"),
        (["--subset", "8"], "fewer than batch_size"),
        (["--seeds", "0"], "--seeds"),
        (["--methods", "simclr,nope"], "unknown method"),
    ],
)
def test_demo_bad_settings_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--no-progress", *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_demo_seeds_give_mean_and_std():
    from essl.experiments.demo import equal_compute_epochs, summarise

    runs = [
        {
            "method": m,
            "base": "simclr",
            "variant": v,
            "seed": s,
            "epochs": 2,
            "backbone_passes": {"grad": 2.0, "no_grad": 0.0},
            "knn_top1": k,
            "linear_lbfgs_top1": k + 1,
            "pretrain_seconds": 10.0 + s,
            "rotation_pred_acc": None,
        }
        for s, (m, v, k) in enumerate([("SimCLR", "base", 80.0), ("SimCLR", "base", 84.0)])
    ]
    (row,) = summarise(runs)
    assert row["knn_top1"] == 82.0 and row["knn_top1_std"] == pytest.approx(2**0.5 * 2)  # sample std
    assert row["seeds"] == [0, 1] and row["pretrain_seconds"] == 10.5
    assert equal_compute_epochs(15, 90.0, 190.0) == 32 and equal_compute_epochs(15, 90.0, 80.0) == 15


def test_demo_other_method_without_equal_compute(tmp_path):
    out = tmp_path / "demo"
    assert (
        main(
            [
                "demo",
                "--methods",
                "mocov3",
                "--no-equal-compute",
                "--epochs",
                "1",
                "--subset",
                "256",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    results = json.loads((out / "results.json").read_text())
    assert [r["method"] for r in results["runs"]] == ["MoCo v3", "E-MoCo v3"]
    assert results["runs"][0]["backbone_passes"] == {"grad": 2.0, "no_grad": 2.0}  # + the momentum encoder's
    assert "| E-MoCo v3 | 1 |" in (out / "results.md").read_text()
