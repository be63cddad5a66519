"""Names that settings and the command line accept, as plain data, for every layer from the ground floor up
(the validation table of :mod:`essl.training.validation` checks them).

This module imports nothing heavy (no torch), so that ``essl --help`` lists the choices without loading torch;
the modules that implement each name (:mod:`essl.runtime` for the precisions, :mod:`essl.evaluation.photonics`
for the checkpoint protocols) import the list from here.
"""

from __future__ import annotations

#: Precision names accepted by ``precision=`` (config) and ``--precision`` (evaluation commands); their dtypes
#: are in :data:`essl.runtime.DTYPES`.
PRECISIONS = ("auto", "bf16", "fp16", "fp32")
#: Checkpoint selection of photonics fine-tuning (``essl phc finetune | experiment --protocol``; implemented in
#: :mod:`essl.evaluation.photonics`): the official two milestones, or the last checkpoint.
CHECKPOINT_PROTOCOLS = ("official", "last")
#: Experiment loggers of ``logger=`` (implemented in :mod:`essl.training.loggers`; each but ``none`` an extra).
LOGGERS = ("none", "tensorboard", "wandb")
