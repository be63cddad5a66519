"""Sharded, resumable generation: reproducibility, resume, no overwrite, merge."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

import essl.photonics.generate as gen
from essl.errors import EsslError
from essl.photonics.generate import (
    GenerationSpec,
    default_file_name,
    generate,
    generate_shards,
    merge_shards,
    plan_shards,
)
from essl.photonics.label import LabelConfig

SPEC = GenerationSpec(family="gpm", seed=4, label=LabelConfig(cutoff=3, nk=7))


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _read_all(path):
    with h5py.File(path, "r") as h5:
        out = {}
        h5.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


def test_result_independent_of_sharding_and_workers(tmp_path):
    a = generate(SPEC, 2, 5, tmp_path / "a", file_name="x.h5", shard_size=2, progress=False)
    b = generate(SPEC, 2, 5, tmp_path / "b", file_name="x.h5", shard_size=0, progress=False)
    c = generate(SPEC, 2, 5, tmp_path / "c", file_name="x.h5", shard_size=3, workers=2, progress=False)
    da, db, dc = _read_all(a), _read_all(b), _read_all(c)
    assert set(da) == set(db) == set(dc)
    assert "unitcell/mpbepsimage/2" in da and "unitcell/mpbepsimage/6" in da
    for key in da:
        np.testing.assert_array_equal(da[key], db[key])
        np.testing.assert_array_equal(da[key], dc[key])
    assert len(list((tmp_path / "a" / "x.shards").glob("shard-*.h5"))) == 3


def test_interrupted_shard_resumes_without_recomputing(tmp_path, monkeypatch):
    calls = []
    real = gen.make_sample

    def flaky(spec, index):
        calls.append(index)
        if index == 4 and len(calls) < 10:
            raise KeyboardInterrupt
        return real(spec, index)

    monkeypatch.setattr(gen, "make_sample", flaky)
    plans = plan_shards(tmp_path / "s", 1, 5, 0)
    with pytest.raises(KeyboardInterrupt):
        generate_shards(SPEC, plans, progress=False)
    # Nothing under the final name; the partial file is marked incomplete and holds 1..3.
    assert not plans[0].path.exists() and plans[0].partial.exists()
    with h5py.File(plans[0].partial, "r") as h5:
        assert not h5.attrs["complete"]
        assert sorted(int(k) for k in h5["mpbcal/DOS"].keys()) == [1, 2, 3]
    calls.clear()
    calls.extend(range(10))  # let index 4 through now
    stats = generate_shards(SPEC, plans, progress=False)
    assert calls[10:] == [4, 5] and stats["new_samples"] == 2
    assert plans[0].path.exists() and not plans[0].partial.exists()
    monkeypatch.setattr(gen, "make_sample", real)
    ref = generate(SPEC, 1, 5, tmp_path / "ref", file_name="r.h5", progress=False)
    merged = merge_shards([plans[0].path], tmp_path / "m.h5")
    da, dr = _read_all(merged), _read_all(ref)
    for key in dr:
        np.testing.assert_array_equal(da[key], dr[key])


def test_completed_shards_are_not_rewritten(tmp_path):
    plans = plan_shards(tmp_path / "s", 1, 4, 2)
    generate_shards(SPEC, plans, progress=False)
    before = [(p.path.stat().st_ino, p.path.stat().st_mtime_ns, _digest(p.path)) for p in plans]
    stats = generate_shards(SPEC, plans, progress=False)
    assert stats == {"skipped_shards": 2, "written_shards": 0, "new_samples": 0}
    after = [(p.path.stat().st_ino, p.path.stat().st_mtime_ns, _digest(p.path)) for p in plans]
    assert before == after


def test_shard_with_other_settings_is_an_error_and_untouched(tmp_path):
    plans = plan_shards(tmp_path / "s", 1, 2, 0)
    generate_shards(SPEC, plans, progress=False)
    digest = _digest(plans[0].path)
    other = GenerationSpec(family="gpm", seed=5, label=SPEC.label)
    with pytest.raises(EsslError, match="different settings.*seed"):
        generate_shards(other, plans, progress=False)
    assert _digest(plans[0].path) == digest


def test_existing_output_is_never_overwritten(tmp_path):
    out = tmp_path / "x.h5"
    out.write_bytes(b"precious")
    with pytest.raises(EsslError, match="already exists"):
        generate(SPEC, 1, 2, tmp_path, file_name="x.h5", progress=False)
    assert out.read_bytes() == b"precious"
    assert not (tmp_path / "x.shards").exists()  # refused before any work


def test_unreadable_partial_is_discarded(tmp_path):
    plans = plan_shards(tmp_path / "s", 1, 2, 0)
    plans[0].path.parent.mkdir(parents=True)
    plans[0].partial.write_bytes(b"\x00" * 100)
    generate_shards(SPEC, plans, progress=False)
    with h5py.File(plans[0].path, "r") as h5:
        assert h5.attrs["complete"]


def test_merge_checks(tmp_path):
    plans = plan_shards(tmp_path / "s", 1, 4, 2)
    generate_shards(SPEC, plans, progress=False)
    with pytest.raises(EsslError, match="index 1 is in both"):
        merge_shards([plans[0].path, plans[0].path], tmp_path / "dup.h5")
    with pytest.raises(EsslError, match="2 missing"):
        merge_shards([plans[0].path], tmp_path / "part.h5", expect=range(1, 5))
    other = plan_shards(tmp_path / "o", 3, 2, 0)
    generate_shards(GenerationSpec(family="blob", seed=4, label=SPEC.label), other, progress=False)
    with pytest.raises(EsslError, match="different settings"):
        merge_shards([plans[0].path, other[0].path], tmp_path / "mixed.h5")
    for name in ("dup.h5", "part.h5", "mixed.h5"):
        assert not (tmp_path / name).exists()
        assert not (tmp_path / (name + ".partial")).exists()
    out = merge_shards([p.path for p in plans], tmp_path / "all.h5", expect=range(1, 5))
    with pytest.raises(EsslError, match="already exists"):
        merge_shards([p.path for p in plans], out)


def test_default_file_names():
    assert default_file_name(GenerationSpec("gpm", seed=1), 1, 9800) == "mf1-sg3-tm.h5"
    assert default_file_name(GenerationSpec("gpm", seed=99, labels=False), 1, 20480) == "mf1-sg3-25k-ul-s99-tm.h5"
    assert default_file_name(GenerationSpec("blob", seed=2), 1, 1999) == "sq-blob-test2k-tm.h5"
    assert default_file_name(GenerationSpec("blob", seed=1), 1, 5099) == "sq-blob-v3-tm.h5"
    assert default_file_name(GenerationSpec("blob", seed=99, labels=False), 1, 15000) == "sq-blob-ul-15k-tm.h5"
    assert default_file_name(GenerationSpec("p1", seed=0), 5, 10) == "p1-s0-5-14-tm.h5"
