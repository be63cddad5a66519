"""Photometric transformations: grayscale, colour inversion and four Gaussian-blur levels.

With the flips, rotations and jigsaws these complete the seven transformations of the paper's
invariance-vs-equivariance sweep (Dangovski et al. 2022). All act on [0, 1] float batches ``(N, C, H, W)``
(training applies them before normalisation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from essl.errors import EsslError
from essl.groups.base import Involution, TransformationGroup

#: ITU-R BT.601 luma weights (the ones torchvision and kornia use for grayscale).
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


class Grayscale(TransformationGroup):
    """Element 1 replaces every pixel's colour by its luma ``0.299 R + 0.587 G + 0.114 B`` (kept as 3 channels);
    element 0 keeps the colour.

    Only defined on 3-channel (RGB) images: on 1-channel data element 1 would be the identity, so predicting it is
    impossible and requiring invariance to it does nothing. Such inputs raise :class:`EsslError`. Grayscale is
    idempotent, not invertible, so the two elements form a monoid, not a group (no :meth:`inverse`).
    """

    name = "grayscale"
    order = 2
    elements = ("id", "gray")

    def check_shape(self, shape: Sequence[int]) -> None:
        super().check_shape(shape)
        if shape[-3] != 3:
            raise EsslError(
                f"The 'grayscale' transformation needs RGB images (3 channels); these have {shape[-3]}. "
                f"On 1-channel data it is the identity, so it can be neither an invariance nor a "
                f"prediction target: leave it out."
            )

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        if not int(k):
            return x
        self.check_shape(x.shape)
        w = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype, device=x.device).view(3, 1, 1)
        return (x * w).sum(-3, keepdim=True).expand_as(x).contiguous()


class ColourInversion(Involution):
    """Colour inversion ``x → 1 − x`` on [0, 1] images (element 1); an involution, so its own inverse."""

    name = "inversion"
    elements = ("id", "1−x")

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return 1.0 - x if int(k) else x


def gaussian_kernel1d(sigma: float, radius: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised samples of ``exp(-t²/2σ²)`` at ``t = -radius..radius``."""
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return (k / k.sum()).to(dtype)


class GaussianBlur4(TransformationGroup):
    """Four blur levels ("four-fold Gaussian blurs" of the paper's sweep): element ``k`` convolves with a
    Gaussian of standard deviation ``sigmas[k] · min(H, W) / reference_size`` pixels. The defaults are 0, 1, 2,
    3 px on a 32-px image, i.e. the same fraction of the image at any resolution (0, 0.5, 1, 1.5 px on the 16-px
    prediction crops of CIFAR-10; 0, 0.44, 0.88, 1.31 px on 14-px MNIST crops). They are close to the σ ≈ 1.1,
    1.7, 2.6 px that torchvision's default σ gives for the 5/9/15-px kernels of a public re-implementation of
    the sweep (kaotty/Understanding-ESSL); weaker levels such as 0.5 px per 32 px vanish on small crops
    (σ = 0.25 px changes a pixel by < 0.1 %). Element 0 (σ = 0) is the identity.

    The kernel is separable with radius ``ceil(3σ)`` (capped below the image size), borders are reflected, and
    each channel is blurred on its own. Blurring is not invertible and two blurs compose to a blur that is not
    in the set, so this is a set of transformations, not a group (no :meth:`compose` or :meth:`inverse`). Very
    small images (below ~12 px) make the first level faint.
    """

    name = "blur"
    order = 4

    def __init__(self, sigmas: Sequence[float] = (0.0, 1.0, 2.0, 3.0), reference_size: int = 32):
        if len(sigmas) != 4 or sigmas[0] != 0 or any(b <= a for a, b in zip(sigmas, sigmas[1:])):
            raise EsslError(f"blur needs four increasing levels starting at 0 (the identity), got {tuple(sigmas)}.")
        self.sigmas, self.reference_size = tuple(float(s) for s in sigmas), reference_size

    def element_names(self) -> list[str]:
        """``σ 0, σ 1, ...``: the blur levels in units of the reference size."""
        return [f"σ {s:g}" for s in self.sigmas]

    def sigma_px(self, k: int, size: int) -> float:
        """The standard deviation (pixels) of element ``k`` on an image of side ``size``."""
        return self.sigmas[int(k)] * size / self.reference_size

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        k = int(k)
        if k == 0:
            return x
        self.check_shape(x.shape)
        h, w = x.shape[-2:]
        sigma = self.sigma_px(k, min(h, w))
        radius = min(max(1, math.ceil(3 * sigma)), min(h, w) - 1)
        if radius < 1:
            return x  # a 1-pixel image has nothing to blur
        kern = gaussian_kernel1d(sigma, radius, x.dtype).to(x.device)
        n, c = x.shape[:2]
        y = x.reshape(n * c, 1, h, w)
        y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), kern.view(1, 1, 1, -1))
        y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), kern.view(1, 1, -1, 1))
        return y.reshape(n, c, h, w)
