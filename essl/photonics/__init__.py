"""Photonic-crystal unit cells, their TM density of states, and the E-SSL photonics datasets.

Sources: the data pipeline of clott3/SIB-CL (Loh et al., Nat. Commun. 2022) that made the E-SSL photonics
datasets, the official rdangovs/essl ``photonics/`` code, and docs/photonics.md.  Modules:

- :mod:`.cells`     random two-tone unit cells (``gpm``, ``blob``, ``p1``, ``cylinder``)
- :mod:`.symmetry`  verified point-group symmetry of an image, symmetry-reduced k-grid
- :mod:`.solver`    TM plane-wave expansion (Laurent rule), bands and group velocities
- :mod:`.dos`       bin-integrated GGR DOS, the ``mpbcal/DOS`` label, E-SSL target and metric
- :mod:`.label`     image -> label pipeline
- :mod:`.h5io`      the E-SSL h5 layout, file names, writer helpers and the loader
- :mod:`.generate`  sharded, resumable, multi-process dataset generation
- :mod:`.commands`  ``essl phc generate | label | merge | finetune | experiment``

The names below are loaded on first use, so that ``essl --help`` builds the ``essl phc`` parsers without the
solver's imports.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from essl.extras import require_extra

require_extra("phc")  # h5py, scipy, threadpoolctl: without them, an error that names `pip install 'essl[phc]'`

if TYPE_CHECKING:
    from essl.photonics.cells import FAMILIES, UnitCell, make_cell
    from essl.photonics.dos import dos_target, empty_lattice, label_frequencies, relative_l1
    from essl.photonics.h5io import DATASETS, PhCData, essl_indices, load_phc, load_phc_split
    from essl.photonics.label import LabelConfig, label_image, label_images

__all__ = [
    "DATASETS",
    "FAMILIES",
    "LabelConfig",
    "PhCData",
    "UnitCell",
    "dos_target",
    "empty_lattice",
    "essl_indices",
    "label_frequencies",
    "label_image",
    "label_images",
    "load_phc",
    "load_phc_split",
    "make_cell",
    "relative_l1",
]

#: public name -> the module it lives in
_HOMES = {
    **dict.fromkeys(("FAMILIES", "UnitCell", "make_cell"), "essl.photonics.cells"),
    **dict.fromkeys(("dos_target", "empty_lattice", "label_frequencies", "relative_l1"), "essl.photonics.dos"),
    **dict.fromkeys(("DATASETS", "PhCData", "essl_indices", "load_phc", "load_phc_split"), "essl.photonics.h5io"),
    **dict.fromkeys(("LabelConfig", "label_image", "label_images"), "essl.photonics.label"),
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'essl.photonics' has no attribute {name!r}")
