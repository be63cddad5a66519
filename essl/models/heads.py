"""Projectors, the SimSiam predictor and the E-SSL prediction heads (rdangovs/essl ``cifar10/main.py``,
``imagenet/*/main.py``).

Every head is an ``nn.Sequential`` built from :func:`mlp`, so the printed module reads like the table in the
paper's code. ``norm`` is ``"bn"`` (BatchNorm1d), ``"bn_noaffine"``, ``"ln"`` (LayerNorm) or ``None``.
"""

from __future__ import annotations

from torch import nn

from essl.errors import EsslError
from essl.models.photonics import shared_norm_mlp


def _norm(kind: str | None, dim: int) -> list[nn.Module]:
    if kind is None:
        return []
    if kind == "bn":
        return [nn.BatchNorm1d(dim)]
    if kind == "bn_noaffine":
        return [nn.BatchNorm1d(dim, affine=False)]
    if kind == "ln":
        return [nn.LayerNorm(dim)]
    raise ValueError(f"unknown norm {kind!r}")


def mlp(
    dims: list[int],
    norm: str | None = "bn",
    bias: bool = False,
    last_bias: bool = True,
    last_norm: str | None = None,
    relu: list[bool] | None = None,
) -> nn.Sequential:
    """Linear layers ``dims[0] → dims[1] → … → dims[-1]``.

    Each hidden layer is Linear(bias) → norm → ReLU (``relu[i]=False`` drops the i-th ReLU); the last is
    Linear(last_bias) → last_norm.
    """
    hidden = len(dims) - 2
    relu = [True] * hidden if relu is None else relu
    layers: list[nn.Module] = []
    for i in range(hidden):
        layers += [nn.Linear(dims[i], dims[i + 1], bias=bias), *_norm(norm, dims[i + 1])]
        if relu[i]:
            layers.append(nn.ReLU(inplace=True))
    layers += [nn.Linear(dims[-2], dims[-1], bias=last_bias), *_norm(last_norm, dims[-1])]
    return nn.Sequential(*layers)


PROJECTORS = (
    "cifar",
    "small",
    "simclr_imagenet",
    "simsiam_imagenet",
    "barlow_imagenet",
    "photonics",
    "byol",
    "byol_small",
    "mocov3",
    "mocov3_small",
    "vicreg_cifar",
    "vicreg_imagenet",
    "vicreg_small",
)
HEADS = ("cifar_simclr", "cifar_simsiam", "small", "imagenet_simclr", "imagenet_simsiam", "photonics")


def projector(kind: str, in_dim: int) -> nn.Sequential:
    """SSL projector by name.

    - ``cifar``: Linear(d→2048, no bias) BN ReLU Linear(2048→2048, no bias) BN(affine=False)  (cifar10/main.py)
    - ``small``: the same at width 512, for the small CPU backbone
    - ``simclr_imagenet``: 2048-2048-128, BN after every layer (imagenet/simclr)
    - ``simsiam_imagenet``: 2048-2048-2048, last BN affine=False (imagenet/simsiam)
    - ``barlow_imagenet``: 8192-8192-8192, no final norm (the loss standardises; imagenet/barlowtwins)
    - ``photonics``: Linear(d→512) BN ReLU Linear(512→512) *same* BN ReLU Linear(512→256) (essl.models.photonics)
    - ``byol``: Linear(d→4096) BN ReLU Linear(4096→256) (Grill et al. 2020, §3.3; solo-learn's CIFAR BYOL)
    - ``mocov3``: Linear(d→4096, no bias) BN ReLU Linear(4096→256, no bias) BN(affine=False) (Chen, Xie & He 2021,
      the ResNet projector of the official ``moco/builder.py``; solo-learn's CIFAR MoCo v3)
    - ``vicreg_cifar``: Linear(d→2048) BN ReLU Linear(2048→2048) BN ReLU Linear(2048→2048, no bias) (solo-learn's
      CIFAR VICReg widths; the layer pattern of the official ``main_vicreg.py``)
    - ``vicreg_imagenet``: the same at 8192-8192-8192 (Bardes et al. 2022, §4.1)
    - ``byol_small``, ``mocov3_small``, ``vicreg_small``: the same shapes at width 1024 / 128 (BYOL, MoCo v3) and
      512 (VICReg), for the small CPU backbone
    """
    if kind in ("byol", "byol_small"):
        hidden, out = (4096, 256) if kind == "byol" else (1024, 128)
        return mlp([in_dim, hidden, out], norm="bn", bias=True, last_bias=True)
    if kind in ("mocov3", "mocov3_small"):
        hidden, out = (4096, 256) if kind == "mocov3" else (1024, 128)
        return mlp([in_dim, hidden, out], norm="bn", bias=False, last_bias=False, last_norm="bn_noaffine")
    if kind in ("vicreg_cifar", "vicreg_imagenet", "vicreg_small"):
        width = {"vicreg_cifar": 2048, "vicreg_imagenet": 8192, "vicreg_small": 512}[kind]
        return mlp([in_dim, width, width, width], norm="bn", bias=True, last_bias=False)
    if kind == "cifar":
        return mlp([in_dim, 2048, 2048], norm="bn", bias=False, last_bias=False, last_norm="bn_noaffine")
    if kind == "small":
        return mlp([in_dim, 512, 512], norm="bn", bias=False, last_bias=False, last_norm="bn_noaffine")
    if kind == "simclr_imagenet":
        return mlp([in_dim, 2048, 2048, 128], norm="bn", bias=False, last_bias=False, last_norm="bn")
    if kind == "simsiam_imagenet":
        return mlp([in_dim, 2048, 2048, 2048], norm="bn", bias=False, last_bias=False, last_norm="bn_noaffine")
    if kind == "barlow_imagenet":
        return mlp([in_dim, 8192, 8192, 8192], norm="bn", bias=False, last_bias=False, last_norm=None)
    if kind == "photonics":
        return shared_norm_mlp(in_dim, 512, 256)
    raise EsslError(f"Unknown projector {kind!r}; use one of {', '.join(PROJECTORS)}.")


def projector_dim(head: nn.Sequential) -> int:
    """Output width of a head built by :func:`mlp`."""
    return [m for m in head if isinstance(m, nn.Linear)][-1].out_features


def simsiam_predictor(dim: int, hidden: int) -> nn.Sequential:
    """SimSiam predictor: Linear(dim→hidden, no bias) BN ReLU Linear(hidden→dim) (Chen & He 2021)."""
    return mlp([dim, hidden, dim], norm="bn", bias=False, last_bias=True)


def byol_predictor(dim: int, hidden: int) -> nn.Sequential:
    """BYOL predictor: the projector's shape, Linear(dim→hidden) BN ReLU Linear(hidden→dim) (Grill et al. 2020,
    §3.3: hidden 4096)."""
    return mlp([dim, hidden, dim], norm="bn", bias=True, last_bias=True)


def mocov3_predictor(dim: int, hidden: int) -> nn.Sequential:
    """MoCo v3 predictor (ResNet): Linear(dim→hidden, no bias) BN ReLU Linear(hidden→dim, no bias), no final BN
    (Chen, Xie & He 2021; official ``moco/builder.py``, hidden 4096)."""
    return mlp([dim, hidden, dim], norm="bn", bias=False, last_bias=False)


def method_predictor(method: str, dim: int, hidden: int) -> nn.Sequential | None:
    """The predictor a method puts on its projector's output (None for SimCLR, Barlow Twins, VICReg)."""
    build = {"simsiam": simsiam_predictor, "byol": byol_predictor, "mocov3": mocov3_predictor}.get(method)
    return build(dim, hidden) if build else None


def prediction_head(kind: str, in_dim: int, num_classes: int) -> nn.Sequential:
    """E-SSL head h that predicts the group element from backbone features (official code as above).

    - ``cifar_simclr``: Linear(d→2048) LN ReLU Linear(2048→2048) LN ReLU Linear(2048→n)
    - ``cifar_simsiam``: the same without the second ReLU (as in the official E-SimSiam)
    - ``small``: the ``cifar_simclr`` shape at width 512, for the small CPU backbone
    - ``imagenet_simclr``: Linear(d→2048) LN ReLU Linear(2048→2048) LN ReLU Linear(2048→128) LN Linear(128→n)
    - ``imagenet_simsiam`` (also E-Barlow Twins): the same with a 256-d bottleneck
    - ``photonics``: Linear(d→512) BN ReLU Linear(512→512) *same* BN ReLU Linear(512→n) (essl.models.photonics)
    """
    if kind == "cifar_simclr":
        return mlp([in_dim, 2048, 2048, num_classes], norm="ln", bias=True)
    if kind == "cifar_simsiam":
        return mlp([in_dim, 2048, 2048, num_classes], norm="ln", bias=True, relu=[True, False])
    if kind == "small":
        return mlp([in_dim, 512, 512, num_classes], norm="ln", bias=True)
    if kind in ("imagenet_simclr", "imagenet_simsiam"):
        bottleneck = 128 if kind == "imagenet_simclr" else 256
        return mlp([in_dim, 2048, 2048, bottleneck, num_classes], norm="ln", bias=True, relu=[True, True, False])
    if kind == "photonics":
        return shared_norm_mlp(in_dim, 512, num_classes)
    raise EsslError(f"Unknown prediction head {kind!r}; use one of {', '.join(HEADS)}.")
