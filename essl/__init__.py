"""essl: Equivariant Self-Supervised Learning (Dangovski et al., ICLR 2022, arXiv 2111.00899).

The building blocks live in sub-packages that mirror the architecture:

- ``essl.data``          datasets read from disk (MNIST-5k ships with the package)
- ``essl.augmentation``  batched, per-sample random view recipes (kornia, on the device)
- ``essl.groups``        finite transformation groups: invariances and equivariance targets
- ``essl.models``        backbones and heads
- ``essl.objectives``    SSL losses and the E-SSL prediction loss
- ``essl.training``      the pretraining loop, schedules, optimisers, checkpoints
- ``essl.evaluation``    kNN, linear probe and equivariance diagnostics
- ``essl.photonics``     photonic-crystal unit cells, the DOS solver and datasets (``pip install 'essl[phc]'``)

``essl.load_backbone(path)`` loads a trained backbone (an export, a run folder or a released checkpoint);
``essl.pretrain(essl.load_config("mnist5k-esimclr", ["epochs=5"]), "runs/x")`` trains one (also on data in
memory: ``train=images, labels=...``); docs/downstream.md.
"""

__version__ = "0.1.0"

from essl.errors import EsslError  # noqa: E402

__all__ = ["EsslError", "__version__", "load_backbone", "load_config", "pretrain"]


def __getattr__(name: str):  # the heavy entry points import torch only when first used
    if name == "load_backbone":
        from essl.export import load_backbone

        return load_backbone
    if name == "pretrain":
        from essl.training.pretrain import pretrain

        return pretrain
    if name == "load_config":
        from essl.training.config import load_config

        return load_config
    raise AttributeError(f"module 'essl' has no attribute {name!r}")
