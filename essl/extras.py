"""Optional dependencies ("extras"): which ``pip install 'essl[EXTRA]'`` brings which packages.

The base install trains and evaluates; the photonics wing (``essl phc ...``, the ``phc-*`` datasets) needs
``essl[phc]``, and the experiment loggers need ``essl[tensorboard]`` or ``essl[wandb]``. :func:`require_extra`
turns a missing package into an :class:`~essl.errors.EsslError` that names the extra to install.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from essl.errors import EsslError

#: extra name -> the modules it provides (kept equal to pyproject.toml's optional-dependencies by a test)
EXTRAS: dict[str, tuple[str, ...]] = {
    "phc": ("h5py", "scipy", "threadpoolctl"),
    "tensorboard": ("tensorboard",),
    "wandb": ("wandb",),
}

#: what each extra is for, as said in the error message
PURPOSE = {
    "phc": "the photonics commands (essl phc ...) and the phc-* datasets",
    "tensorboard": "logger=tensorboard",
    "wandb": "logger=wandb",
}


class MissingExtra(EsslError):
    """An optional package is not installed; ``extra`` names the ``essl[...]`` extra that brings it."""

    def __init__(self, message: str, extra: str):
        super().__init__(message)
        self.extra = extra


def require_extra(extra: str) -> list[ModuleType]:
    """Import the modules of ``extra``; raise :class:`MissingExtra` naming the extra when one is not installed."""
    modules, missing = [], []
    for name in EXTRAS[extra]:
        try:
            modules.append(importlib.import_module(name))
        except ImportError as exc:  # ModuleNotFoundError, or a module blocked with sys.modules[name] = None
            if getattr(exc, "name", None) not in (None, name) and not str(exc.name).startswith(name):
                raise  # the package is there but one of its own dependencies is broken: show the real error
            missing.append(name)
    if missing:
        raise MissingExtra(
            f"Missing optional package(s) {', '.join(missing)}, needed for {PURPOSE[extra]}. "
            f"Install them with: pip install 'essl[{extra}]'",
            extra,
        )
    return modules
