"""Random-resized crops inside the valid part of padded images (streamed image folders).

Workers of a streamed folder (:mod:`essl.data.imagenet`) resize each image so that its shorter side is the working
size ``S`` (aspect ratio kept), put it in the top-left corner of a fixed ``(L, L)`` box and send the box together
with the image's valid ``(height, width)``: a :class:`PaddedImages` batch. The view recipes then draw every
RandomResizedCrop inside the valid region of each image, so the crops see the whole image as torchvision's
``RandomResizedCrop`` on the decoded file does (rdangovs/essl ``imagenet/*/main.py`` transforms), not only a
central square.

:func:`sample_crop_boxes` follows torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of an area
fraction ``U(scale)`` and a log-uniform aspect ratio; the first draw that fits is placed uniformly; when none fits,
the central crop with the aspect clamped to ``ratio`` is used. It is vectorised over the batch and draws its random
numbers from torch's global CPU generator (saved in checkpoints), so a resumed run repeats the same crops on any
device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from kornia.geometry.transform import crop_and_resize

ATTEMPTS = 10


@dataclass
class PaddedImages:
    """uint8 images ``(N, C, L, L)`` whose valid pixels are ``images[i, :, :h_i, :w_i]``; ``sizes`` ``(N, 2)``
    holds ``(h_i, w_i)``."""

    images: torch.Tensor
    sizes: torch.Tensor

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PaddedImages:
        return PaddedImages(self.images.to(device, non_blocking=non_blocking), self.sizes)

    def pin_memory(self) -> PaddedImages:
        return PaddedImages(self.images.pin_memory(), self.sizes)

    @property
    def shape(self) -> torch.Size:
        return self.images.shape

    def __len__(self) -> int:
        return len(self.images)


def sample_crop_boxes(
    sizes: torch.Tensor, scale: tuple[float, float], ratio: tuple[float, float], uniforms: torch.Tensor | None = None
) -> torch.Tensor:
    """``(N, 4)`` integer crop boxes ``(x0, y0, width, height)`` inside images of valid ``sizes`` ``(N, 2)`` =
    ``(h, w)``, drawn as torchvision's ``RandomResizedCrop.get_params`` draws them (see the module docstring).

    ``uniforms`` ``(N, 2·ATTEMPTS + 2)`` in [0, 1) replaces the draws from the global generator (evaluation draws
    them per global batch, so that every process count gets the same crops)."""
    sizes = sizes.to("cpu", torch.float64)
    n = len(sizes)
    if uniforms is None:
        uniforms = torch.rand(n, 2 * ATTEMPTS + 2, dtype=torch.float64)
    uniforms = uniforms.to(torch.float64)
    h, w = sizes[:, :1], sizes[:, 1:]
    area = h * w
    target = area * (scale[0] + (scale[1] - scale[0]) * uniforms[:, :ATTEMPTS])
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * uniforms[:, ATTEMPTS : 2 * ATTEMPTS])
    cw = torch.round(torch.sqrt(target * aspect))
    ch = torch.round(torch.sqrt(target / aspect))
    fits = (cw > 0) & (cw <= w) & (ch > 0) & (ch <= h)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first attempt that fits
    cw, ch = cw.gather(1, first)[:, 0], ch.gather(1, first)[:, 0]
    h, w = h[:, 0], w[:, 0]
    # no attempt fits: the whole image, its aspect clamped to the ratio range, centred
    in_ratio = w / h
    fw = torch.where(in_ratio > ratio[1], torch.round(h * ratio[1]), w)
    fh = torch.where(in_ratio < ratio[0], torch.round(w / ratio[0]), h)
    ok = fits.any(1)
    cw, ch = torch.where(ok, cw, fw), torch.where(ok, ch, fh)
    u = uniforms[:, 2 * ATTEMPTS :]
    x0 = torch.where(ok, torch.floor(u[:, 0] * (w - cw + 1)), torch.floor((w - cw) / 2))
    y0 = torch.where(ok, torch.floor(u[:, 1] * (h - ch + 1)), torch.floor((h - ch) / 2))
    return torch.stack([x0, y0, cw, ch], 1).long()


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int, resample: str = "bilinear") -> torch.Tensor:
    """Crop ``boxes`` ``(N, 4)`` = ``(x0, y0, width, height)`` out of float ``images`` and resize each to
    ``size × size`` (one batched warp; box corners map to the output's corner pixel centres)."""
    x0, y0, bw, bh = (boxes[:, i].to(images.device, torch.float32) for i in range(4))
    x1, y1 = x0 + bw - 1, y0 + bh - 1
    corners = torch.stack(
        [torch.stack([x0, y0], 1), torch.stack([x1, y0], 1), torch.stack([x1, y1], 1), torch.stack([x0, y1], 1)], 1
    )
    return crop_and_resize(images, corners, (size, size), mode=resample, align_corners=True)
