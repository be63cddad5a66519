"""Sharded, resumable, multi-process generation of photonic-crystal h5 files.

A run generates indices ``start .. start + count - 1`` of one cell family
(docs/photonics.md) and works in **shards** of consecutive indices:

* Each shard is its own file ``<out_dir>/<stem>.shards/shard-<first>-<last>.h5``.  It is
  written as ``<name>.partial`` and renamed atomically (``os.replace``) once every index is in
  and the ``complete`` attribute is set, so a file under a final name is always complete.
* **Resumable**: a complete shard with the same generation settings is skipped, never rewritten;
  a ``.partial`` shard is reopened and only its missing indices are computed (a ``.partial``
  that HDF5 cannot open, e.g. after a kill in the middle of a write, is discarded and redone).
  A shard written with *different* settings is an error and is left untouched.
* Independent runs (machines, CI jobs) can each take an index range into the same shard folder;
  :func:`merge_shards` then writes the original single-file layout, again through a temporary
  file and an atomic rename.  An existing final file is never overwritten.
* Every cell is drawn from ``(seed, family, index)`` alone (:func:`essl.photonics.cells.cell_rng`)
  and its label depends only on the stored image, so the result does not depend on sharding or
  on the number of workers.
* ``workers > 1`` runs a ``spawn`` process pool with one BLAS thread per process
  (:mod:`.parallel`); the main process alone writes the files.  The reference measured no gain
  from 2 workers on 2 vCPUs (section 7.4), so the default is 1.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from essl.errors import EsslError
from essl.photonics.bands import empty_lattice, full_grid_freqs, official_kgrid
from essl.photonics.cells import FAMILIES, make_cell
from essl.photonics.h5io import DATASETS, present_indices, write_sample
from essl.photonics.label import LabelConfig, label_image
from essl.photonics.parallel import imap_workers

__all__ = [
    "GenerationSpec",
    "ShardPlan",
    "default_file_name",
    "generate",
    "make_sample",
    "merge_shards",
    "plan_shards",
]

PARTIAL = ".partial"
#: Attributes that must agree between shards of one dataset (and on resume).
_IDENTITY_ATTRS = (
    "generator",
    "family",
    "seed",
    "labels",
    "res",
    "supersample",
    "eps_range",
    "fill_range",
    "max_order",
    "store_bands",
    "label_config",
)


@dataclass(frozen=True)
class GenerationSpec:
    """What to generate for each index (everything except the index range).

    Attributes:
        family: cell family.
        seed: dataset seed.
        labels: compute ``mpbcal/DOS`` (and the extras) or write images only.
        res, supersample, eps_range, fill_range, max_order: passed to
            :func:`essl.photonics.cells.make_cell`.
        store_bands: also store the band structures (:func:`band_extras`).
        label: labelling settings.
    """

    family: str
    seed: int = 0
    labels: bool = True
    res: int = 32
    supersample: int = 8
    eps_range: tuple[float, float] = (1.0, 20.0)
    fill_range: tuple[float, float] = (0.01, 0.99)
    max_order: int | None = None
    store_bands: bool = False
    label: LabelConfig = field(default_factory=LabelConfig)

    def attrs(self) -> dict[str, Any]:
        """Identity attributes written to (and compared between) files."""
        return {
            "generator": "essl.photonics (PWE, Laurent rule; bin-integrated GGR)",
            "family": self.family,
            "seed": int(self.seed),
            "labels": bool(self.labels),
            "res": int(self.res),
            "supersample": int(self.supersample),
            "eps_range": json.dumps(list(map(float, self.eps_range))),
            "fill_range": json.dumps(list(map(float, self.fill_range))),
            "max_order": -1 if self.max_order is None else int(self.max_order),
            "store_bands": bool(self.store_bands),
            "label_config": json.dumps(self.label.as_attrs(), sort_keys=True) if self.labels else "",
        }


def band_extras(bands: Any, epsavg: float) -> dict[str, np.ndarray]:
    """``--store-bands``: the official band-structure keys on the full grid (``mpbcal/efreq``, ``emptylattice``,
    ``eldiff``, :mod:`essl.photonics.bands`) and the solver's data on the reduced grid (``mpbcal/wedge/*``:
    k-points, orbit sizes, frequencies, group velocities), enough to relabel the DOS without solving again."""
    efreq = full_grid_freqs(bands)
    empty = empty_lattice(official_kgrid(bands.nk), epsavg, efreq.shape[1])
    return {
        "mpbcal/efreq": efreq.astype(np.float32),
        "mpbcal/emptylattice": empty.astype(np.float32),
        "mpbcal/eldiff": (efreq - empty).astype(np.float32),
        "mpbcal/wedge/kpoints": bands.kpoints.astype(np.float32),
        "mpbcal/wedge/kweights": bands.weights.astype(np.float32),
        "mpbcal/wedge/efreq": bands.freqs.astype(np.float32),
        "mpbcal/wedge/grpvel": bands.vels.astype(np.float32),
    }


def make_sample(spec: GenerationSpec, index: int) -> dict[str, Any]:
    """Cell ``index`` and (if ``spec.labels``) its label, as arrays ready for :func:`write_sample`.

    The label is computed from the float32 image that is stored, so relabelling the stored
    image (``essl phc label``) reproduces it.
    """
    cell = make_cell(
        spec.family,
        index,
        seed=spec.seed,
        res=spec.res,
        supersample=spec.supersample,
        eps_range=spec.eps_range,
        fill_range=spec.fill_range,
        max_order=spec.max_order,
    )
    extras: dict[str, Any] = {
        "unitcell/epsin": cell.eps_in,
        "unitcell/epsout": cell.eps_out,
        "unitcell/filling": cell.filling,
        "unitcell/uclevel": cell.level,
        "unitcell/uccoefs": cell.coefficients,
    }
    dos = None
    if spec.labels:
        lab = label_image(cell.image, spec.label)
        dos = lab.dos
        if spec.store_bands:
            extras.update(band_extras(lab.bands, lab.epsavg))
    return {"index": index, "image": cell.image, "epsavg": cell.epsavg, "dos": dos, "extras": extras}


def _task(args: tuple[GenerationSpec, int]) -> dict[str, Any]:
    return make_sample(*args)


def default_file_name(spec: GenerationSpec, start: int, count: int) -> str:
    """The preset's original file name if ``spec`` matches one, else a descriptive name."""
    for preset in DATASETS.values():
        if (preset.family, preset.seed, preset.labels) == (spec.family, spec.seed, spec.labels) and (
            preset.start,
            preset.count,
        ) == (start, count):
            return preset.file
    kind = "" if spec.labels else "-ul"
    return f"{spec.family}{kind}-s{spec.seed}-{start}-{start + count - 1}-tm.h5"


@dataclass(frozen=True)
class ShardPlan:
    """One shard: indices ``start .. stop - 1`` written to ``path``."""

    start: int
    stop: int
    path: Path

    @property
    def partial(self) -> Path:
        """Temporary file the shard is built in."""
        return self.path.with_name(self.path.name + PARTIAL)


def plan_shards(shard_dir: Path, start: int, count: int, shard_size: int) -> list[ShardPlan]:
    """Split ``start .. start + count - 1`` into shards of ``shard_size`` (0: one shard)."""
    size = count if shard_size <= 0 else shard_size
    plans = []
    for a in range(start, start + count, size):
        b = min(a + size, start + count)
        plans.append(ShardPlan(a, b, shard_dir / f"shard-{a:06d}-{b - 1:06d}.h5"))
    return plans


def _check_identity(path: Path, attrs: dict[str, Any], want: dict[str, Any]) -> None:
    diff = [k for k in _IDENTITY_ATTRS if str(attrs.get(k)) != str(want.get(k))]
    if diff:
        details = ", ".join(f"{k}: file {attrs.get(k)!r} vs requested {want.get(k)!r}" for k in diff)
        raise EsslError(
            f"{path} was generated with different settings ({details}); it is left "
            f"untouched: use another --out-dir, or delete it to regenerate"
        )


def _inspect_complete(plan: ShardPlan, spec: GenerationSpec) -> None:
    """Validate a shard under its final name (complete, same settings, all indices)."""
    import h5py

    try:
        with h5py.File(plan.path, "r") as h5:
            attrs = dict(h5.attrs)
            _check_identity(plan.path, attrs, spec.attrs())
            have = present_indices(h5, spec.labels)
    except OSError as err:
        raise EsslError(
            f"{plan.path} exists but cannot be read ({err}); it is left untouched: delete it to regenerate the shard"
        ) from None
    missing = set(range(plan.start, plan.stop)) - have
    if not attrs.get("complete", False) or missing:
        raise EsslError(
            f"{plan.path} exists but is incomplete ({len(missing)} indices missing); "
            f"it is left untouched: delete it to regenerate the shard"
        )


def _open_partial(plan: ShardPlan, spec: GenerationSpec) -> tuple[Any, set[int]]:
    """Open (or create) the shard's ``.partial`` file; return it and the indices already in."""
    import h5py

    if plan.partial.exists():
        try:
            h5 = h5py.File(plan.partial, "a")
        except OSError:
            print(f"note: discarding unreadable partial shard {plan.partial} (interrupted write); regenerating it")
            plan.partial.unlink()
        else:
            try:
                _check_identity(plan.partial, dict(h5.attrs), spec.attrs())
            except EsslError:
                h5.close()
                raise
            return h5, present_indices(h5, spec.labels) & set(range(plan.start, plan.stop))
    h5 = h5py.File(plan.partial, "w")
    for key, value in spec.attrs().items():
        h5.attrs[key] = value
    h5.attrs["index_start"] = plan.start
    h5.attrs["index_stop"] = plan.stop
    h5.attrs["complete"] = False
    return h5, set()


def _finish_shard(h5: Any, plan: ShardPlan) -> None:
    h5.attrs["complete"] = True
    h5.flush()
    h5.close()
    os.replace(plan.partial, plan.path)


def generate_shards(
    spec: GenerationSpec, plans: list[ShardPlan], workers: int = 1, progress: bool = True
) -> dict[str, int]:
    """Fill every shard in ``plans`` that is not complete yet (module docstring).

    Returns counts ``{"skipped_shards", "written_shards", "new_samples"}``.
    """
    if spec.family not in FAMILIES:
        raise EsslError(f"unknown cell family {spec.family!r}; choose from {sorted(FAMILIES)}")
    # Validate everything that exists before computing anything.
    todo = []
    skipped = 0
    for plan in plans:
        if plan.path.exists():
            _inspect_complete(plan, spec)
            skipped += 1
        else:
            todo.append(plan)
    if not todo:
        return {"skipped_shards": skipped, "written_shards": 0, "new_samples": 0}
    plans[0].path.parent.mkdir(parents=True, exist_ok=True)

    opened: dict[int, tuple[Any, list[int]]] = {}
    tasks: list[tuple[int, int]] = []  # (plan number, index)
    try:
        for n, plan in enumerate(todo):
            h5, have = _open_partial(plan, spec)
            pending = [i for i in range(plan.start, plan.stop) if i not in have]
            opened[n] = (h5, pending)
            tasks += [(n, i) for i in pending]
        # Shards whose samples are all in already (interrupted just before the rename).
        for n, (h5, pending) in list(opened.items()):
            if not pending:
                _finish_shard(h5, todo[n])
                del opened[n]
        results = imap_workers(_task, ((spec, i) for _, i in tasks), workers)
        if progress:
            from tqdm import tqdm

            results = tqdm(
                results, total=len(tasks), unit="cell", desc=f"phc {spec.family}" + (" +DOS" if spec.labels else "")
            )
        for (n, index), sample in zip(tasks, results):
            h5, pending = opened[n]
            write_sample(h5, index, sample["image"], sample["epsavg"], sample["dos"], sample["extras"])
            h5.flush()
            pending.remove(index)
            if not pending:
                _finish_shard(h5, todo[n])
                del opened[n]
    finally:
        for h5, _ in opened.values():
            h5.close()
    return {"skipped_shards": skipped, "written_shards": len(todo), "new_samples": len(tasks)}


def merge_shards(shard_paths: list[Path], out_path: Path, expect: range | None = None) -> Path:
    """Merge complete shard files into one file with the original layout (atomic rename).

    Args:
        shard_paths: shard files (all complete and generated with the same settings).
        out_path: the merged file; must not exist.
        expect: if given, the merged indices must be exactly this range.

    Raises:
        EsslError: existing output, incomplete/inconsistent shards, duplicate or missing indices.
    """
    import h5py

    out_path = Path(out_path)
    if out_path.exists():
        raise EsslError(f"{out_path} already exists; it is left untouched: delete it or choose another output name")
    if not shard_paths:
        raise EsslError("no shard files to merge")
    first_attrs: dict[str, Any] | None = None
    seen: dict[int, Path] = {}
    for path in shard_paths:
        try:
            with h5py.File(path, "r") as h5:
                attrs = dict(h5.attrs)
                if not attrs.get("complete", False):
                    raise EsslError(
                        f"shard {path} is not complete; finish it with the same `essl phc generate` command first"
                    )
                if first_attrs is None:
                    first_attrs = attrs
                else:
                    _check_identity(path, attrs, first_attrs)
                for i in present_indices(h5, bool(attrs.get("labels", True))):
                    if i in seen:
                        raise EsslError(f"index {i} is in both {seen[i]} and {path}")
                    seen[i] = path
        except OSError as err:
            raise EsslError(f"cannot read shard {path} ({err})") from None
    assert first_attrs is not None
    if expect is not None and set(seen) != set(expect):
        missing = sorted(set(expect) - set(seen))
        extra = sorted(set(seen) - set(expect))
        raise EsslError(
            f"shards do not cover indices {expect.start}..{expect.stop - 1} "
            f"exactly ({len(missing)} missing, e.g. {missing[:5]}; {len(extra)} "
            f"outside, e.g. {extra[:5]}); generate the missing range first"
        )
    partial = out_path.with_name(out_path.name + PARTIAL)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with h5py.File(partial, "w") as dst:
            for key in _IDENTITY_ATTRS:
                dst.attrs[key] = first_attrs[key]
            dst.attrs["index_start"] = min(seen)
            dst.attrs["index_stop"] = max(seen) + 1
            dst.attrs["complete"] = False
            for path in shard_paths:
                with h5py.File(path, "r") as src:
                    for top in src.keys():
                        for sub in src[top].keys():
                            group = dst.require_group(f"{top}/{sub}")
                            for name in src[f"{top}/{sub}"].keys():
                                src.copy(src[f"{top}/{sub}/{name}"], group, name=name)
            dst.attrs["complete"] = True
        os.replace(partial, out_path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return out_path


def shard_dir_for(out_dir: Path, file_name: str) -> Path:
    """Folder holding the shards of ``file_name``: ``<out_dir>/<stem>.shards``."""
    stem = file_name[:-3] if file_name.endswith(".h5") else file_name
    return Path(out_dir) / f"{stem}.shards"


def generate(
    spec: GenerationSpec,
    start: int,
    count: int,
    out_dir: str | os.PathLike[str],
    file_name: str | None = None,
    shard_size: int = 1000,
    workers: int = 1,
    merge: bool = True,
    progress: bool = True,
) -> Path | None:
    """Generate indices ``start .. start + count - 1`` as shards, then merge them (optional).

    Returns the merged file, or ``None`` with ``merge=False``.  The final file must not exist
    yet (it is never overwritten); completed shards are reused.
    """
    if count < 1 or start < 1:
        raise EsslError(f"need --n >= 1 and --start-index >= 1 (h5 indices are 1-based), got n={count}, start={start}")
    name = file_name or default_file_name(spec, start, count)
    out_path = Path(out_dir) / name
    if merge and out_path.exists():
        raise EsslError(
            f"{out_path} already exists; it is left untouched: delete it or choose another --out-file/--out-dir"
        )
    plans = plan_shards(shard_dir_for(Path(out_dir), name), start, count, shard_size)
    stats = generate_shards(spec, plans, workers=workers, progress=progress)
    if progress:
        print(
            f"shards: {stats['written_shards']} written, {stats['skipped_shards']} already "
            f"complete; {stats['new_samples']} new samples"
        )
    if not merge:
        return None
    return merge_shards([p.path for p in plans], out_path, expect=range(start, start + count))
