"""``essl sweep``: a tiny sweep end to end, resuming a stopped sweep without retraining finished runs, and the
summary arithmetic checked against a plain recomputation."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import yaml

import essl.training.pretrain as pretrain_module
from essl.cli import main
from essl.errors import EsslError
from essl.runs import load_checkpoint
from essl.experiments.catalog import PAPER_TRANSFORMS
from essl.experiments.sweep import (
    SweepRun,
    build_spec,
    markdown_table,
    parse_shard,
    plan_runs,
    run_config,
    run_state,
    run_sweep,
    summarize,
    transform_problem,
)
from image_folders import make_image_folder

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    make_image_folder(root, {"train": 16, "test": 16})
    return root


def tiny(root, epochs: int = 1) -> list[str]:
    return [
        f"data_root={root}",
        "dataset=folder",
        "image_size=16",
        f"epochs={epochs}",
        "batch_size=16",
        "num_threads=1",
        "precision=fp32",
        "warmup_epochs=0",
    ]


VIEWS = ["--view", "crop_only_small", "--pred-view", "crop_only_small"]


def fingerprint(path) -> tuple:
    return path.stat().st_mtime_ns, hashlib.sha256(path.read_bytes()).hexdigest()


# ---------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
def test_tiny_sweep_end_to_end(tmp_path, data_root, capsys):
    out = tmp_path / "sweep"
    rc = main(
        [
            "sweep",
            "--out",
            str(out),
            "--transforms",
            "rotation,inversion",
            "--seeds",
            "1",
            "--no-progress",
            *VIEWS,
            *tiny(data_root),
        ]
    )
    assert rc == 0
    names = [
        "baseline-seed0",
        "rotation-issl-seed0",
        "rotation-essl-seed0",
        "inversion-issl-seed0",
        "inversion-essl-seed0",
    ]
    acc = {}
    for name in names:
        result = json.loads((out / name / "eval" / "knn.json").read_text())
        assert result["protocol"]["name"] == "knn"
        acc[name] = result["top1"]
    # each run trained what its name says
    cfg = {n: yaml.safe_load((out / n / "config.yaml").read_text()) for n in names}
    assert cfg["baseline-seed0"]["invariances"] == [] and cfg["baseline-seed0"]["equivariance"] == []
    assert cfg["rotation-issl-seed0"]["invariances"] == ["rotation"]
    assert cfg["rotation-essl-seed0"]["equivariance"][0]["group"] == "rotation"
    assert cfg["inversion-essl-seed0"]["equivariance"][0]["weight"] == 0.4
    assert all(c["views"] == ["crop_only_small", "crop_only_small"] for c in cfg.values())
    metrics = (out / "rotation-essl-seed0" / "metrics.jsonl").read_text()
    assert "pred_loss/rotation" in metrics
    # the report: differences to the baseline recomputed from the per-run results
    results = json.loads((out / "results.json").read_text())
    assert results["runs"] == pytest.approx(acc)
    for t in ("rotation", "inversion"):
        for mode in ("issl", "essl"):
            got = results["summary"]["transforms"][t][mode]
            assert got["mean"] == pytest.approx(acc[f"{t}-{mode}-seed0"])
            assert got["delta"]["mean"] == pytest.approx(acc[f"{t}-{mode}-seed0"] - acc["baseline-seed0"])
            assert got["std"] is None  # one seed: no spread
    md = (out / "results.md").read_text()
    assert "| rotation |" in md and "| inversion |" in md and "baseline (crop only)" in md
    # what each run cost: views and prediction crops are all 16 px, so E-SSL adds |G| passes per image
    costs = results["costs"]
    assert costs["baseline-seed0"]["passes"] == costs["rotation-issl-seed0"]["passes"] == 2.0
    assert costs["rotation-essl-seed0"]["passes"] == 6.0 and costs["inversion-essl-seed0"]["passes"] == 4.0
    assert all(c["seconds"] > 0 for c in costs.values())
    assert "backbone passes" in md and "| 2.00 / 6.00 |" in md
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "[5/5]" in printed and "| rotation |" in printed


# ---------------------------------------------------------------------------------------------- resume
@pytest.mark.slow
def test_stopped_sweep_resumes_without_redoing_finished_runs(tmp_path, data_root, monkeypatch):
    out = tmp_path / "sweep"
    spec, base = build_spec(
        "mnist5k-simclr", tiny(data_root, epochs=2), ["hflip"], 2, 0.4, "knn", "crop_only_small", "crop_only_small"
    )
    # Ctrl-C right after the first epoch checkpoint of the 2nd run (hflip-issl-seed0)
    saves = {"n": 0}
    real_save = pretrain_module.save_checkpoint

    def save_then_interrupt(path, state):
        real_save(path, state)
        saves["n"] += 1
        if saves["n"] == 3:  # baseline wrote 2 checkpoints, this is hflip-issl-seed0 epoch 1
            raise KeyboardInterrupt

    monkeypatch.setattr(pretrain_module, "save_checkpoint", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(spec, base, out, log=lambda *_: None)
    monkeypatch.setattr(pretrain_module, "save_checkpoint", real_save)
    stopped = out / "hflip-issl-seed0"
    assert load_checkpoint(stopped / "checkpoint.pt")["epoch"] == 1
    assert not (stopped / "eval").exists(), "no result may exist for an unfinished run"
    assert not (out / "hflip-essl-seed0").exists()
    assert run_state(out / "baseline-seed0", base, "knn") == "done"
    baseline_files = {p: fingerprint(out / "baseline-seed0" / p) for p in ("checkpoint.pt", "eval/knn.json")}

    # rerun: count the epochs actually trained
    trained = []
    real_fit = pretrain_module.Pretrainer.fit

    def counting_fit(self):
        trained.append((self.run_dir.name, self.start_epoch))
        return real_fit(self)

    monkeypatch.setattr(pretrain_module.Pretrainer, "fit", counting_fit)
    lines = []
    run_sweep(spec, base, out, log=lines.append)
    assert trained == [
        ("hflip-issl-seed0", 1),
        ("hflip-essl-seed0", 0),
        ("baseline-seed1", 0),
        ("hflip-issl-seed1", 0),
        ("hflip-essl-seed1", 0),
    ]
    assert {p: fingerprint(out / "baseline-seed0" / p) for p in baseline_files} == baseline_files
    assert any("baseline-seed0: already finished" in line for line in lines)
    assert any("hflip-issl-seed0: resumed and finished" in line for line in lines)
    assert len((stopped / "metrics.jsonl").read_text().splitlines()) == 2
    assert load_checkpoint(stopped / "checkpoint.pt")["epoch"] == 2

    # a lost result is re-evaluated without training; a run stopped before its first checkpoint restarts
    finished = {n: fingerprint(out / n / "checkpoint.pt") for n in ("hflip-essl-seed0", "baseline-seed1")}
    (out / "hflip-essl-seed0" / "eval" / "knn.json").unlink()
    (out / "baseline-seed1" / "eval" / "knn.json").unlink()
    (out / "baseline-seed1" / "checkpoint.pt").unlink()
    trained.clear()
    lines.clear()
    results = run_sweep(spec, base, out, log=lines.append)
    assert trained == [("baseline-seed1", 0)]
    assert fingerprint(out / "hflip-essl-seed0" / "checkpoint.pt") == finished["hflip-essl-seed0"]
    assert any("hflip-essl-seed0: evaluated" in line for line in lines)
    assert any("baseline-seed1: restarted and finished" in line for line in lines)
    assert len(results["runs"]) == 6
    s = results["summary"]["transforms"]["hflip"]["essl"]
    assert s["n"] == 2 and s["std"] is not None and s["delta"]["n"] == 2


def tree(path) -> dict:
    """Every file under ``path`` with its content hash (a refused command must leave this unchanged)."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }


def test_a_run_trained_with_other_settings_is_refused_not_overwritten(tmp_path, data_root):
    out = tmp_path / "sweep"
    spec, base = build_spec(
        "mnist5k-simclr", tiny(data_root), ["vflip"], 1, 0.4, "knn", "crop_only_small", "crop_only_small"
    )
    run_sweep(spec, base, out, log=lambda *_: None)
    before = tree(out)
    spec2, base2 = build_spec(
        "mnist5k-simclr", tiny(data_root, epochs=3), ["vflip"], 1, 0.4, "knn", "crop_only_small", "crop_only_small"
    )
    # a shard or rerun with other settings is refused before anything is written (sweep.json included)
    with pytest.raises(EsslError, match=r"started with other settings: epochs: 1 \(sweep.json\) vs 3"):
        run_sweep(spec2, base2, out, log=lambda *_: None)
    with pytest.raises(EsslError, match="started with other settings"):
        run_sweep(spec2, base2, out, report_only=True, log=lambda *_: None)
    spec3, base3 = build_spec(
        "mnist5k-simclr", tiny(data_root), ["vflip"], 1, 0.4, "knn", "crop_only_small", "crop_only_small", samples=1
    )  # same baseline and I-SSL run; the E-SSL run differs
    with pytest.raises(EsslError, match=r"samples: 0 \(sweep.json\) vs 1"):
        run_sweep(spec3, base3, out, log=lambda *_: None)
    assert tree(out) == before
    # engineering settings may differ between shards (another data_root spelling, threads)
    spec4, base4 = build_spec(
        "mnist5k-simclr",
        tiny(data_root) + ["num_threads=2"],
        ["vflip"],
        1,
        0.4,
        "knn",
        "crop_only_small",
        "crop_only_small",
    )
    run_sweep(spec4, base4, out, report_only=True, log=lambda *_: None)
    # without sweep.json (a folder of an older essl) every run folder still refuses other settings, before
    # anything is written
    plan = (out / "sweep.json").read_bytes()
    (out / "sweep.json").unlink()
    with pytest.raises(EsslError, match="trained with other settings.*epochs"):
        run_sweep(spec2, base2, out, log=lambda *_: None)
    assert not (out / "sweep.json").exists()
    (out / "sweep.json").write_bytes(plan)
    with pytest.raises(EsslError, match="vflip-essl-seed0 was trained with other settings.*samples"):
        run_state(
            out / "vflip-essl-seed0",
            run_config(base3, SweepRun("vflip", "essl", 0), 0.4, "crop_only_small", spec3.head, 1),
            "knn",
        )
    # --report rebuilds the table from finished runs and trains nothing
    lines = []
    results = run_sweep(spec, base, out, report_only=True, log=lines.append)
    assert set(results["runs"]) == {"baseline-seed0", "vflip-issl-seed0", "vflip-essl-seed0"}
    assert {k: v for k, v in tree(out).items() if k.startswith("baseline")} == {
        k: v for k, v in before.items() if k.startswith("baseline")
    }


def test_a_corrupt_sweep_plan_is_refused(tmp_path, data_root):
    out = tmp_path / "sweep"
    out.mkdir()
    (out / "sweep.json").write_text("{not json")
    spec, base = build_spec(
        "mnist5k-simclr", tiny(data_root), ["vflip"], 1, 0.4, "knn", "crop_only_small", "crop_only_small"
    )
    with pytest.raises(EsslError, match="sweep.json cannot be read as a sweep plan"):
        run_sweep(spec, base, out, log=lambda *_: None)
    assert tree(out) == {"sweep.json": hashlib.sha256(b"{not json").hexdigest()}


# ---------------------------------------------------------------------------------------------- planning
def test_plan_is_seed_major_with_one_folder_per_run():
    runs = plan_runs(["rotation", "jigsaw"], [0, 1])
    assert [r.name for r in runs[:5]] == [
        "baseline-seed0",
        "rotation-issl-seed0",
        "rotation-essl-seed0",
        "jigsaw-issl-seed0",
        "jigsaw-essl-seed0",
    ]
    assert len(runs) == 10 and len({r.name for r in runs}) == 10


def test_grayscale_is_skipped_on_one_channel_and_odd_crops_are_refused():
    assert "identity" in transform_problem("grayscale", 1, 28, 14)
    assert transform_problem("grayscale", 3, 32, 16) is None
    assert "even" in transform_problem("jigsaw", 1, 28, 15)
    assert all(transform_problem(t, 1, 28, 14) is None for t in PAPER_TRANSFORMS if t != "grayscale")


def test_bad_inputs_raise_essl_errors(data_root):
    with pytest.raises(EsslError, match="Unknown transformation group 'rotaton'"):
        build_spec("mnist5k-simclr", [], ["rotaton"], 1, 0.4, "knn")
    with pytest.raises(EsslError, match="--seeds"):
        build_spec("mnist5k-simclr", [], ["rotation"], 0, 0.4, "knn")
    with pytest.raises(EsslError, match="--protocol"):
        build_spec("mnist5k-simclr", [], ["rotation"], 1, 0.4, "svm")
    with pytest.raises(EsslError, match="twice"):
        build_spec("mnist5k-simclr", [], ["rotation", "rotation"], 1, 0.4, "knn")
    with pytest.raises(EsslError, match="Unknown view recipe"):
        build_spec("mnist5k-simclr", [], ["rotation"], 1, 0.4, "knn", view="crop_onyl")
    with pytest.raises(EsslError, match="--pred-samples"):
        build_spec("mnist5k-simclr", [], ["rotation"], 1, 0.4, "knn", samples=-1)
    assert main(["sweep", "--out", "/nonexistent/x", "--report", "--transforms", "rotation"]) == 2


# ---------------------------------------------------------------------------------------------- summary
def test_summary_statistics_match_a_plain_computation():
    acc = {
        "baseline-seed0": 80.0,
        "baseline-seed1": 82.0,
        "baseline-seed2": 78.0,
        "rotation-issl-seed0": 75.0,
        "rotation-issl-seed1": 79.0,
        "rotation-issl-seed2": 74.0,
        "rotation-essl-seed0": 83.0,
        "rotation-essl-seed1": 84.5,
        "rotation-essl-seed2": 79.0,
    }
    s = summarize(acc, ["rotation"], [0, 1, 2])
    base = np.array([80.0, 82.0, 78.0])
    essl = np.array([83.0, 84.5, 79.0])
    assert s["baseline"]["mean"] == pytest.approx(base.mean())
    assert s["baseline"]["std"] == pytest.approx(base.std(ddof=1))
    e = s["transforms"]["rotation"]["essl"]
    assert e["mean"] == pytest.approx(essl.mean()) and e["std"] == pytest.approx(essl.std(ddof=1))
    assert e["delta"]["mean"] == pytest.approx((essl - base).mean())
    assert e["delta"]["std"] == pytest.approx((essl - base).std(ddof=1))
    i = s["transforms"]["rotation"]["issl"]["delta"]
    assert i["mean"] == pytest.approx(np.mean([-5.0, -3.0, -4.0])) and i["mean"] < 0
    md = markdown_table(s, "knn", {"grayscale": "needs RGB"})
    assert f"+{(essl - base).mean():.2f} ± {(essl - base).std(ddof=1):.2f}" in md
    assert "grayscale skipped: needs RGB" in md
    # a missing run is left out of its statistics, not counted as zero
    partial = summarize({k: v for k, v in acc.items() if k != "rotation-essl-seed2"}, ["rotation"], [0, 1, 2])
    assert partial["transforms"]["rotation"]["essl"]["n"] == 2
    assert partial["transforms"]["rotation"]["essl"]["delta"]["mean"] == pytest.approx((3.0 + 2.5) / 2)
    assert SweepRun(None, "baseline", 4).name == "baseline-seed4"


def test_shards_split_the_runs_and_share_one_report(tmp_path, data_root):
    out = tmp_path / "sweep"
    spec, base = build_spec(
        "mnist5k-simclr", tiny(data_root), ["hflip"], 1, 0.4, "knn", "crop_only_small", "crop_only_small"
    )
    lines = []
    results = run_sweep(spec, base, out, log=lines.append, shard=(1, 2))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["hflip-issl-seed0"]  # run 2 of 3
    assert list(results["runs"]) == ["hflip-issl-seed0"]
    results = run_sweep(spec, base, out, log=lines.append, shard=(0, 2))
    assert set(results["runs"]) == {"baseline-seed0", "hflip-issl-seed0", "hflip-essl-seed0"}
    assert sum("already finished" in line for line in lines) == 0
    for bad in ("2/2", "1", "a/b", "0/0"):
        with pytest.raises(EsslError, match="--shard"):
            parse_shard(bad)
    assert parse_shard("1/4") == (1, 4)
