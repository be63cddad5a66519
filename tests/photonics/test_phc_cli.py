"""``essl phc`` through ``register`` on a private parser: round trips and bad inputs."""

from __future__ import annotations

import argparse
import hashlib
import shutil

import h5py
import numpy as np
import pytest

from essl.errors import EsslError
from essl.photonics.commands import register

FAST = ["--pw-cutoff", "4", "--nk", "9", "--no-progress"]


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="essl")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["phc", *argv])
    return args.func(args)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    assert (
        run(
            "generate",
            "--family",
            "gpm",
            "--n",
            "3",
            "--start-index",
            "5",
            "--seed",
            "2",
            "--out-dir",
            str(out),
            "--out-file",
            "g.h5",
            *FAST,
        )
        == 0
    )
    return out / "g.h5"


def test_label_reproduces_generated_labels(generated, tmp_path):
    with h5py.File(generated, "r") as h5:
        images = np.stack([h5[f"unitcell/mpbepsimage/{i}"][()] for i in (5, 6, 7)])
        stored = np.stack([h5[f"mpbcal/DOS/{i}"][()] for i in (5, 6, 7)])
    np.save(tmp_path / "cells.npy", images)
    assert run("label", str(tmp_path / "cells.npy"), str(tmp_path / "dos.npy"), *FAST) == 0
    labels = np.load(tmp_path / "dos.npy")
    assert labels.shape == (3, 500) and labels.dtype == np.float32
    np.testing.assert_array_equal(labels, stored)


def test_label_default_settings_match_generate_defaults(tmp_path):
    """Default `phc label` settings are the default label definition of `phc generate`."""
    run(
        "generate",
        "--family",
        "cylinder",
        "--n",
        "1",
        "--out-dir",
        str(tmp_path),
        "--out-file",
        "c.h5",
        "--no-progress",
    )
    with h5py.File(tmp_path / "c.h5", "r") as h5:
        np.save(tmp_path / "c.npy", h5["unitcell/mpbepsimage/1"][()][None])
        stored = h5["mpbcal/DOS/1"][()]
    run("label", str(tmp_path / "c.npy"), str(tmp_path / "d.npy"), "--no-progress")
    np.testing.assert_array_equal(np.load(tmp_path / "d.npy")[0], stored)


GOOD = np.full((2, 32, 32), 3.0)


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((2, 16, 16), 3.0), "shape"),
        (np.full((32, 32), 3.0), "shape"),
        (np.full((2, 32, 31), 3.0), "shape"),
        (np.full((0, 32, 32), 3.0), "shape"),
        (np.where(np.arange(32)[None, :, None] == 4, 0.5, GOOD), r"\[1, 20\]"),
        (np.where(np.arange(32)[None, :, None] == 4, 25.0, GOOD), r"\[1, 20\]"),
        (np.where(np.arange(32)[None, :, None] == 4, np.nan, GOOD), "NaN"),
        (np.array([["a"] * 32] * 32)[None], "numeric"),
    ],
)
def test_label_rejects_bad_arrays(tmp_path, array, message):
    np.save(tmp_path / "in.npy", array)
    with pytest.raises(EsslError, match=message):
        run("label", str(tmp_path / "in.npy"), str(tmp_path / "out.npy"), *FAST)
    assert not (tmp_path / "out.npy").exists()
    assert not (tmp_path / "out.npy.partial").exists()


def test_label_rejects_unreadable_inputs(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    np.savez(tmp_path / "arch.npz", a=GOOD)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    for name, message in [
        ("junk.npy", "cannot read"),
        ("missing.npy", "does not exist"),
        ("arch.npz", "npz"),
        ("obj.npy", "cannot read"),
    ]:
        with pytest.raises(EsslError, match=message):
            run("label", str(tmp_path / name), str(tmp_path / "out.npy"), *FAST)
    assert not (tmp_path / "out.npy").exists()
    assert (tmp_path / "junk.npy").read_bytes() == b"not numpy"


def test_label_never_overwrites(tmp_path):
    np.save(tmp_path / "in.npy", GOOD)
    (tmp_path / "out.npy").write_bytes(b"keep me")
    with pytest.raises(EsslError, match="already exists"):
        run("label", str(tmp_path / "in.npy"), str(tmp_path / "out.npy"), *FAST)
    assert (tmp_path / "out.npy").read_bytes() == b"keep me"
    with pytest.raises(EsslError, match="does not exist"):
        run("label", str(tmp_path / "in.npy"), str(tmp_path / "nodir" / "o.npy"), *FAST)


def test_generate_refuses_existing_output_and_foreign_shards(generated, tmp_path):
    digest = _digest(generated)
    with pytest.raises(EsslError, match="already exists"):
        run(
            "generate",
            "--family",
            "gpm",
            "--n",
            "3",
            "--start-index",
            "5",
            "--seed",
            "2",
            "--out-dir",
            str(generated.parent),
            "--out-file",
            "g.h5",
            *FAST,
        )
    assert _digest(generated) == digest
    # Shards of another seed in the way (copied under the new name): refused, left untouched.
    shutil.copytree(generated.parent / "g.shards", tmp_path / "other.shards")
    shard = next((tmp_path / "other.shards").glob("shard-*.h5"))
    shard_digest = _digest(shard)
    with pytest.raises(EsslError, match="different settings"):
        run(
            "generate",
            "--family",
            "gpm",
            "--n",
            "3",
            "--start-index",
            "5",
            "--seed",
            "3",
            "--out-dir",
            str(tmp_path),
            "--out-file",
            "other.h5",
            *FAST,
        )
    assert _digest(shard) == shard_digest
    assert not (tmp_path / "other.h5").exists()


def test_generate_argument_errors(tmp_path):
    with pytest.raises(EsslError, match="--family and --n"):
        run("generate", "--out-dir", str(tmp_path))
    with pytest.raises(EsslError, match="pw-cutoff"):
        run("generate", "--family", "p1", "--n", "1", "--pw-cutoff", "0", "--out-dir", str(tmp_path))
    with pytest.raises(SystemExit):
        run("generate", "--family", "p1", "--n", "0")
    with pytest.raises(SystemExit):
        run("generate", "--family", "square", "--n", "1")


def test_unlabelled_preset_and_merge(tmp_path):
    assert (
        run(
            "generate",
            "--dataset",
            "blob-ul",
            "--n",
            "4",
            "--shard-size",
            "2",
            "--no-merge",
            "--out-dir",
            str(tmp_path),
            "--no-progress",
        )
        == 0
    )
    shards = tmp_path / "blob-ul-s99-1-4-tm.shards"
    assert len(list(shards.glob("shard-*.h5"))) == 2
    assert run("merge", str(shards), "--out", str(tmp_path / "m.h5"), "--expect-start", "1", "--expect-n", "4") == 0
    with h5py.File(tmp_path / "m.h5", "r") as h5:
        assert "mpbcal" not in h5 and len(h5["unitcell/epsavg"]) == 4
        assert h5.attrs["family"] == "blob" and h5.attrs["seed"] == 99
    with pytest.raises(EsslError, match="already exists"):
        run("merge", str(shards), "--out", str(tmp_path / "m.h5"))
    with pytest.raises(EsslError, match="does not exist"):
        run("merge", str(tmp_path / "nope"), "--out", str(tmp_path / "n.h5"))
