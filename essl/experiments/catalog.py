"""What the experiment drivers run, as plain data: the demo's methods, the sweep's transformations and
protocols, and the photonics experiment's budgets.

This module imports nothing heavy (no torch), so that ``essl --help`` lists these choices and defaults without
loading torch; :mod:`essl.experiments.demo`, :mod:`essl.experiments.sweep` and :mod:`essl.experiments.photonics`
run them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# ------------------------------------------------------------------------------------------------ essl demo
#: ``--methods`` names: (label, base preset, E- preset).
DEMO_METHODS = {
    "simclr": ("SimCLR", "mnist5k-simclr", "mnist5k-esimclr"),
    "simsiam": ("SimSiam", "mnist5k-simsiam", "mnist5k-esimsiam"),
    "barlow": ("Barlow Twins", "mnist5k-barlow", "mnist5k-ebarlow"),
    "byol": ("BYOL", "mnist5k-byol", "mnist5k-ebyol"),
    "vicreg": ("VICReg", "mnist5k-vicreg", "mnist5k-evicreg"),
    "mocov3": ("MoCo v3", "mnist5k-mocov3", "mnist5k-emocov3"),
}
DEFAULT_EPOCHS = 15

# ----------------------------------------------------------------------------------------------- essl sweep
#: the transformations of the paper's sweep (§5.3), the default of ``--transforms``
PAPER_TRANSFORMS = ("hflip", "grayscale", "rotation", "vflip", "jigsaw", "blur", "inversion")
#: ``--protocol`` of the sweep: how every run is evaluated
SWEEP_PROTOCOLS = ("knn", "linear_lbfgs")


# --------------------------------------------------------------------------------------- essl phc experiment
@dataclass(frozen=True)
class Budget:
    """Pretraining overrides (``key=value`` on the presets) and fine-tuning settings of one budget."""

    name: str
    pretrain: tuple[str, ...]
    finetune: dict[str, Any] = field(default_factory=dict)
    note: str = ""


BUDGETS: dict[str, Budget] = {
    "paper": Budget("paper", (), {}, "the paper's settings (presets as written; fine-tuning 100 epochs, 3,000 cells)"),
    "small": Budget(
        "small",
        ("backbone=phc_cnn_small", "subset=600", "epochs=3", "batch_size=64", "channels_last=false"),
        {"epochs": 30, "n_train": 150},
        "CPU-sized for 2 shared cores: quarter-width encoder phc_cnn_small (16-64-64 conv channels, 1024-d), "
        "600 unlabelled cells, 3 pretraining epochs at batch 64 (the paper's lr 1e-3 per 256, i.e. 2.5e-4); "
        "fine-tuning 30 epochs on 150 labelled cells (batch 64, Adam 1e-4), 3 seeds",
    ),
}
