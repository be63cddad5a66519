"""Bad inputs of the photonics commands: h5 files (``essl pretrain phc-*``, ``essl phc finetune``), ``essl phc
label`` arrays and the options of ``essl phc generate | label | finetune | experiment``."""

from pathlib import Path

import numpy as np
import pytest

from .harness import Case, check, params, write_file

UL, LAB = "mf1-sg3-25k-ul-s99-tm.h5", "mf1-sg3-tm.h5"  # gpm: unlabelled (pretraining) and labelled (fine-tuning)


def _cell(i: int) -> np.ndarray:
    yy, xx = np.mgrid[0:32, 0:32]
    return np.where((yy - 16) ** 2 + (xx - 16) ** 2 < (4 + i) ** 2, 12.0, 1.0).astype(np.float32)


def phc_files(bad: str | None = None, target: str = UL):
    """Setup: ``phc/`` with a small unlabelled and a labelled gpm file; ``bad`` spoils sample 2 of ``target``."""

    def setup(ws: Path) -> None:
        import h5py

        (ws / "phc").mkdir()
        for name, indices, labelled in ((UL, range(1, 9), False), (LAB, [*range(1, 9), *range(7801, 7805)], True)):
            with h5py.File(ws / "phc" / name, "w") as f:
                for i in indices:
                    img = _cell(i % 5)
                    eps = img.mean()
                    if name == target and i == 2 and bad is not None:
                        img, eps = SPOIL[bad](img, eps)
                    if bad == "image-dataset-not-group" and name == target:
                        if i == 1:
                            f["unitcell/mpbepsimage"] = np.stack([_cell(0)] * 8)
                    else:
                        f[f"unitcell/mpbepsimage/{i}"] = img
                    f[f"unitcell/epsavg/{i}"] = eps
                    if labelled:
                        f[f"mpbcal/DOS/{i}"] = np.linspace(0, 50, 500, dtype=np.float32)

    return setup


SPOIL = {
    "mixed-sizes": lambda img, eps: (img[:16, :16], eps),
    "string-image": lambda img, eps: (np.bytes_(b"not an image"), eps),
    "complex-image": lambda img, eps: (img.astype(np.complex64) + 0.5j, eps),
    "array-epsavg": lambda img, eps: (img, np.array([eps, eps])),
    "string-epsavg": lambda img, eps: (img, np.bytes_(b"12.5")),
    "complex-epsavg": lambda img, eps: (img, np.complex64(eps + 1j)),
    "nan-image": lambda img, eps: (np.full_like(img, np.nan), eps),
    "image-dataset-not-group": lambda img, eps: (img, eps),
}

PRE = (
    "pretrain",
    "phc-gpm-simclr",
    "data_root=phc",
    "epochs=1",
    "batch_size=4",
    "num_threads=1",
    "--out",
    "r",
    "--no-progress",
)
FT = (
    "phc",
    "finetune",
    "--scratch",
    "--family",
    "gpm",
    "--data-root",
    "phc",
    "--out",
    "o",
    "--n-train",
    "4",
    "--epochs",
    "1",
    "--seeds",
    "1",
)


def cells_npy(name: str, array) -> callable:
    def setup(ws: Path) -> None:
        np.save(ws / name, array)

    return setup


CELLS = np.stack([_cell(i) for i in range(2)]).astype(np.float64)

CASES = [
    # h5 files read for pretraining (unlabelled) and fine-tuning (labelled)
    *[
        Case(f"pretrain-h5-{bad}", PRE, (UL, "/2"), setup=phc_files(bad))
        for bad in ("mixed-sizes", "string-image", "complex-image", "array-epsavg", "string-epsavg", "complex-epsavg")
    ],
    Case("pretrain-h5-nan-image", PRE, (UL,), setup=phc_files("nan-image")),
    Case(
        "pretrain-h5-dataset-not-group",
        PRE,
        (UL, "unitcell/mpbepsimage", "group"),
        setup=phc_files("image-dataset-not-group"),
    ),
    Case("pretrain-h5-not-hdf5", PRE, (UL,), setup=write_file(f"phc/{UL}", "not an h5 file")),
    Case("pretrain-h5-missing", PRE, (UL,), setup=write_file("phc/readme.txt", "empty")),
    *[
        Case(f"finetune-h5-{bad}", FT, (LAB, "/2"), setup=phc_files(bad, LAB))
        for bad in ("mixed-sizes", "complex-image", "array-epsavg", "string-epsavg")
    ],
    Case(
        "finetune-h5-dataset-not-group",
        FT,
        (LAB, "unitcell/mpbepsimage", "group"),
        setup=phc_files("image-dataset-not-group", LAB),
    ),
    # phc finetune / experiment options
    Case("finetune-lr-nan", (*FT, "--lr", "nan"), ("--lr", "nan"), setup=phc_files()),
    Case("finetune-seeds-negative", (*FT[:-1], "-1"), ("--seeds", "-1"), setup=phc_files()),
    Case("finetune-seeds-repeated", (*FT, "1"), ("seeds", "distinct"), setup=phc_files()),
    Case(
        "finetune-n-train-too-large", (*FT[:9], "--n-train", "100", *FT[11:]), ("--n-train", "100"), setup=phc_files()
    ),
    Case(
        "finetune-not-a-phc-run", ("phc", "finetune", "nowhere", "--data-root", "phc"), ("nowhere",), setup=phc_files()
    ),
    Case(
        "experiment-seeds-negative",
        ("phc", "experiment", "--family", "gpm", "--data-root", "phc", "--seeds", "-2", "--out", "x"),
        ("--seeds", "-2"),
        setup=phc_files(),
    ),
    Case(
        "experiment-bad-setting",
        ("phc", "experiment", "--family", "gpm", "--data-root", "phc", "--out", "x", "--set", "lr=nan"),
        ("lr", "nan"),
        setup=phc_files(),
    ),
    # phc label
    Case(
        "label-nbands-above-plane-waves",
        ("phc", "label", "cells.npy", "out.npy", "--nbands", "40", "--pw-cutoff", "2", "--nk", "2", "--no-progress"),
        ("--nbands", "40", "plane wave"),
        setup=cells_npy("cells.npy", CELLS),
    ),
    Case(
        "label-complex-array",
        ("phc", "label", "cells.npy", "out.npy", "--no-progress"),
        ("complex",),
        setup=cells_npy("cells.npy", CELLS.astype(np.complex128)),
    ),
    Case(
        "label-wrong-shape",
        ("phc", "label", "cells.npy", "out.npy", "--no-progress"),
        ("(N, 32, 32)",),
        setup=cells_npy("cells.npy", CELLS[:, :16]),
    ),
    Case(
        "label-out-of-range",
        ("phc", "label", "cells.npy", "out.npy", "--no-progress"),
        ("[1, 20]",),
        setup=cells_npy("cells.npy", CELLS * 5),
    ),
    Case(
        "label-pw-cutoff-inf",
        ("phc", "label", "cells.npy", "out.npy", "--pw-cutoff", "inf"),
        ("--pw-cutoff",),
        setup=cells_npy("cells.npy", CELLS),
    ),
    Case("label-missing-input", ("phc", "label", "nothing.npy", "out.npy"), ("nothing.npy",)),
    Case(
        "label-pickled-object-array",
        ("phc", "label", "cells.npy", "out.npy"),
        ("cells.npy",),
        setup=cells_npy("cells.npy", np.array([{"a": 1}], dtype=object)),
    ),
    # phc generate
    Case(
        "generate-shard-size-negative",
        ("phc", "generate", "--family", "gpm", "--n", "2", "--shard-size", "-1", "--out-dir", "g"),
        ("--shard-size", "-1"),
    ),
    Case(
        "generate-seed-negative",
        ("phc", "generate", "--family", "gpm", "--n", "2", "--seed", "-5", "--out-dir", "g"),
        ("--seed", "-5"),
    ),
    Case(
        "generate-nbands-above-plane-waves",
        ("phc", "generate", "--family", "gpm", "--n", "2", "--pw-cutoff", "2", "--nbands", "40", "--out-dir", "g"),
        ("--nbands", "40", "plane wave"),
    ),
    Case("generate-nothing-named", ("phc", "generate", "--out-dir", "g"), ("--dataset", "--family")),
]


@pytest.mark.parametrize("case", params(CASES))
def test_bad_input(case, tmp_path):
    check(case, tmp_path)
