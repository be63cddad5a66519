"""`essl report` on two tiny runs: the side-by-side table, the plots and the output-folder rules; and the CLI
evaluations that feed it."""

import json
import shutil

import pytest

from essl.cli import main
from essl.errors import EsslError
from essl.evaluation.report import MANIFEST, write_report

from image_folders import make_image_folder

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def evaluated_runs(tiny_runs):
    """Both tiny runs with kNN, both probes (a 1-epoch paper protocol), fine-tuning and diagnostics."""
    for run in tiny_runs:
        common = [str(run), "--threads", "1", "--device", "cpu"]
        assert main(["knn", *common, "--k", "10"]) == 0
        assert main(["probe", *common]) == 0  # the default protocol: linear_lbfgs
        assert main(["probe", *common, "--protocol", "cifar", "--epochs", "1", "--repeats", "2", "--quiet"]) == 0
        assert main(["finetune", *common, "--epochs", "1", "--label-fraction", "0.5", "--quiet"]) == 0
        assert main(["diagnose", *common, "--group", "rotation"]) == 0
    return tiny_runs


def test_report_table_and_plots(evaluated_runs, tmp_path, capsys):
    capsys.readouterr()
    out = tmp_path / "rep"
    assert main(["report", *map(str, evaluated_runs), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    header = next(line for line in printed.splitlines() if line.startswith("| |"))
    assert header == "| | esimclr | simclr |"
    rows = {line.split(" | ")[0].lstrip("| "): line for line in printed.splitlines() if line.startswith("| ")}
    assert "E-SimCLR (rotation, λ=0.4)" in rows["method"] and "| SimCLR |" in rows["method"]
    assert rows["epochs (done / planned)"].count("2 / 2") == 2
    # what each run cost: 2 views of 32 px (+ 4 rotations of a 16-px crop: 4 · (16/32)² = 1) and measured time
    assert rows["backbone passes / image / step (pixel-weighted; cost of the objective)"].endswith("| 3.00 | 2.00 |")
    assert rows["pretraining time (measured training steps)"].count(" s |") == 2
    assert rows["kNN monitor during training, last (training precision)"].count("(epoch 2, k=10, t=0.1)") == 2
    for name in (
        "kNN top-1 · knn · k 10 (protocol 200)",
        "linear probe top-1 · linear_lbfgs",
        "linear probe top-1 · cifar · epochs 1 (protocol 100) · repeats 2 (protocol 5)",
        "fine-tuning top-1 · bt_finetune · epochs 1 (protocol 20) · 50% labels",
        "equivariance: g predicted from f(g·x), test acc. · rotation (chance 25%)",
    ):
        assert name in rows and "–" not in rows[name], name
    assert "± " in rows["linear probe top-1 · cifar · epochs 1 (protocol 100) · repeats 2 (protocol 5)"]
    # the rotation-prediction training accuracy exists only for the E-SimCLR run
    pred = rows["prediction accuracy during training, last epoch (train batches) · rotation"]
    assert pred.rstrip(" |").endswith("–")
    assert "Protocols:" in printed and "**cifar**: rdangovs/essl cifar10/main.py" in printed
    files = {p.name for p in out.iterdir()}
    assert {"report.md", "report.json", "curves.png", "accuracy.png", "diagnostics-rotation.png", MANIFEST} <= files
    for name in ("curves.png", "accuracy.png", "diagnostics-rotation.png"):
        data = (out / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 10_000
    table = json.loads((out / "report.json").read_text())
    assert table["columns"] == ["esimclr", "simclr"] and table["rows"][0]["name"] == "method"


def test_report_default_folder_and_replacing_own_files(evaluated_runs, tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for src, dst in zip(evaluated_runs, runs):
        shutil.copytree(src, dst, ignore=shutil.ignore_patterns("report"))
    first = write_report(runs)
    assert first["folder"] == runs[0] / "report" and (runs[0] / "report" / "diagnostics-rotation.png").is_file()
    (runs[0] / "report" / "notes.txt").write_text("mine")
    for run in runs:  # drop the diagnostics: the next report no longer draws them
        (run / "eval" / "diagnostics-rotation.json").unlink()
    write_report(runs)
    folder = runs[0] / "report"
    assert not (folder / "diagnostics-rotation.png").exists()  # our own stale plot is gone
    assert (folder / "notes.txt").read_text() == "mine"  # other files are left alone
    assert "equivariance" not in (folder / "report.md").read_text()


def test_report_never_overwrites_a_foreign_file(evaluated_runs, tmp_path):
    out = tmp_path / "shared"
    out.mkdir()
    (out / "report.md").write_text("my own notes\n")
    with pytest.raises(EsslError, match="not written by an earlier `essl report`"):
        write_report(list(evaluated_runs), out)
    assert (out / "report.md").read_text() == "my own notes\n"
    assert sorted(p.name for p in out.iterdir()) == ["report.md"]  # nothing half-written
    (tmp_path / "file").write_text("x")
    with pytest.raises(EsslError, match="is a file"):
        write_report(list(evaluated_runs), tmp_path / "file")


def test_report_and_cli_errors(tmp_path, tiny_runs, capsys):
    with pytest.raises(EsslError, match="not a folder"):
        write_report([tmp_path / "missing"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(EsslError, match="nothing to report"):
        write_report([tmp_path / "empty"])
    assert main(["probe", str(tiny_runs[0]), "--protocol", "linear_lbfgs", "--epochs", "3"]) == 2
    assert main(["probe", str(tiny_runs[0]), "--protocol", "cifar", "--label-fraction", "2"]) == 2
    assert main(["knn"]) == 2
    assert main(["diagnose", str(tiny_runs[0]), "--max-train", "0"]) == 2
    assert main(["knn", str(tiny_runs[0]), "--threads", "-1"]) == 2
    assert main(["diagnose", str(tiny_runs[0]), "--group", "spin"]) == 2
    err = capsys.readouterr().err
    assert "--max-train must be a whole number >= 1" in err and "--threads must be a whole number >= 0" in err
    assert "Unknown transformation group 'spin'" in err
    assert "--epochs applies to the trained protocols" in err
    assert "--label-fraction must be a finite number in (0, 1]" in err
    assert "Name a run folder" in err


def test_other_data_gets_its_own_result_and_row(tiny_runs, tmp_path):
    other = make_image_folder(tmp_path / "digits", {"train": 12, "test": 4}, classes=4, seed=5)
    run = tmp_path / "run"
    shutil.copytree(tiny_runs[1], run, ignore=shutil.ignore_patterns("report", "eval"))
    common = [str(run), "--threads", "1", "--device", "cpu"]
    assert main(["probe", *common]) == 0
    assert main(["probe", *common, "--dataset", "folder", "--data-root", str(other)]) == 0
    assert main(["diagnose", *common, "--data-root", str(other), "--group", "hflip"]) == 0
    names = sorted(p.name for p in (run / "eval").iterdir())
    assert names == [
        "diagnostics-hflip-on-folder-digits.json",
        "linear_lbfgs-on-folder-digits.json",
        "linear_lbfgs.json",
    ]
    other_result = json.loads((run / "eval" / "linear_lbfgs-on-folder-digits.json").read_text())
    assert other_result["data"]["test_images"] == 16
    report = write_report([run], tmp_path / "rep")
    assert "linear probe top-1 · linear_lbfgs · on folder-digits" in report["markdown"]
    assert "| linear probe top-1 · linear_lbfgs |" in report["markdown"]
    assert (tmp_path / "rep" / "diagnostics-hflip-on-folder-digits.png").is_file()


def test_results_of_other_kinds_and_stale_checkpoints_are_shown(tiny_runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs[0], run, ignore=shutil.ignore_patterns("report", "eval"))
    (run / "eval").mkdir()
    # a photonics-style result (no top1: a summary over seeds) and a kNN result of an older checkpoint
    (run / "eval" / "phc-finetune-n3000-e100.json").write_text(
        json.dumps(
            {
                "protocol": {"name": "phc-dos-finetune", "description": "DOS regression"},
                "checkpoint": {"epoch": 2},
                "summary": {"mean": 0.1234, "std": 0.005, "n_seeds": 3},
            }
        )
    )
    (run / "eval" / "knn.json").write_text(
        json.dumps(
            {
                "evaluation": "knn",
                "protocol": {"name": "knn", "k": 200, "t": 0.1, "source": "monitor"},
                "top1": 50.0,
                "checkpoint_info": {"epoch": 1},
            }
        )
    )
    text = write_report([run], tmp_path / "rep")["markdown"]
    assert "| phc-dos-finetune · phc-finetune-n3000-e100 | 0.1234 ± 0.005 (3 seeds) |" in text
    assert "| kNN top-1 · knn (k=200, t=0.1) | 50.00 [epoch-1 checkpoint] |" in text
    assert "- **phc-dos-finetune**: DOS regression" in text
