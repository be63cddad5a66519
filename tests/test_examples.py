"""The README's custom-loop example runs and its rotation objective is wired to the backbone."""

import runpy
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "custom_loop.py"


def test_custom_loop_example_runs(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["custom_loop.py", "--steps", "2", "--batch", "16"])
    runpy.run_path(str(EXAMPLE), run_name="__main__")
    out = capsys.readouterr().out
    assert "rotation CE" in out and out.count("step") == 2


def test_readme_shows_the_example_verbatim():
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    body = EXAMPLE.read_text().split("steps, batch = args.steps, args.batch\n", 1)[1]
    for line in body.strip().splitlines():
        if line.strip():
            assert line in readme, f"README is out of date with examples/custom_loop.py: {line!r}"


def test_custom_backbone_example_runs(monkeypatch, capsys, tmp_path):
    example = EXAMPLE.parent / "custom_backbone.py"
    monkeypatch.setattr(
        sys, "argv", ["custom_backbone.py", "--epochs", "1", "--subset", "128", "--out", str(tmp_path / "run")]
    )
    monkeypatch.setattr(sys, "path", list(sys.path))  # the example adds its folder to sys.path
    runpy.run_path(str(example), run_name="__main__")
    out = capsys.readouterr().out
    assert "custom_backbone:tiny_convnet, 64-d features" in out
    assert (tmp_path / "run" / "tiny.safetensors").is_file()


def test_own_data_example_runs(monkeypatch, capsys, tmp_path):
    example = EXAMPLE.parent / "own_data.py"
    argv = ["own_data.py", "--epochs", "1", "--subset", "128", "--out", str(tmp_path / "run")]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(example), run_name="__main__")
    out = capsys.readouterr().out
    assert "trained on 128 images in memory" in out and "encoder.safetensors: small_cnn, features (8, 256)" in out
