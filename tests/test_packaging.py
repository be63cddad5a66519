"""Packaging: the optional extras are declared once, and a missing extra gives an error that names it."""

import sys
from pathlib import Path

import pytest

from essl.cli import main
from essl.errors import EsslError
from essl.extras import EXTRAS, MissingExtra, require_extra

ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _name(requirement: str) -> str:
    return requirement.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()


def test_extras_match_pyproject():
    declared = _pyproject()["project"]["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        assert sorted(map(_name, declared[extra])) == sorted(modules), extra
    assert "dev" in declared


def test_base_install_has_no_extras_and_no_torchvision():
    base = {_name(r) for r in _pyproject()["project"]["dependencies"]}
    assert {"torch", "kornia", "safetensors"} <= base
    for modules in EXTRAS.values():
        assert not base & set(modules)
    assert not base & {"torchvision", "timm"}  # both pull their own torch build


def _without(monkeypatch, module: str) -> None:
    """Make ``module`` look uninstalled and forget every imported photonics module (restored afterwards)."""
    monkeypatch.setitem(sys.modules, module, None)
    for name in [
        m for m in sys.modules if m in ("essl.photonics", "essl.data.photonics") or m.startswith("essl.photonics.")
    ]:
        monkeypatch.delitem(sys.modules, name)


def test_phc_command_without_the_extra_names_it(monkeypatch, capsys):
    _without(monkeypatch, "h5py")
    assert main(["phc", "generate", "--dataset", "gpm", "--out-dir", "x"]) == 2
    err = capsys.readouterr().err
    assert "h5py" in err and "pip install 'essl[phc]'" in err and "Traceback" not in err
    assert main(["phc", "--help"]) == 2  # the error, not a help text of a command that cannot run
    assert "essl[phc]" in capsys.readouterr().err
    assert not Path("x").exists()


def test_help_lists_an_unavailable_command(monkeypatch, capsys):
    _without(monkeypatch, "scipy")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "pip install 'essl[phc]'" in capsys.readouterr().out


def test_phc_dataset_without_the_extra_names_it(monkeypatch):
    from essl.data import load_dataset

    _without(monkeypatch, "threadpoolctl")
    with pytest.raises(EsslError, match=r"essl\[phc\]"):
        load_dataset("phc-gpm", "train", "somewhere")


def test_require_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)
    with pytest.raises(MissingExtra, match=r"pip install 'essl\[wandb\]'") as info:
        require_extra("wandb")
    assert info.value.extra == "wandb"


def test_blas_single_thread_limits_blas():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    from essl.photonics.parallel import blas_single_thread

    import numpy  # noqa: F401  (loads numpy's BLAS)

    with blas_single_thread():
        blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
        assert blas and all(p["num_threads"] == 1 for p in blas)
