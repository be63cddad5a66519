"""View recipes of the paper as batched, per-sample random transforms (kornia) on the training device.

A :class:`ViewRecipe` holds the numbers; :func:`build_view` turns it into a module that maps a uint8 batch
``(N, C, H, W)`` to a normalised float batch, with independent random parameters for every image.
Recipes (Dangovski et al. 2022, official code rdangovs/essl ``cifar10/main.py``,
``imagenet/*/main.py``):

- ``cifar``            RandomResizedCrop(32, scale 0.2-1), hflip 0.5, ColorJitter(0.4,0.4,0.4,0.1) p 0.8, gray 0.2
- ``cifar_small``      the prediction-branch view: the same with RandomResizedCrop(16, scale 0.2-1)
- ``cifar_asym1/2``    solo-learn's CIFAR pair for BYOL and MoCo v3 (``scripts/pretrain/cifar/augmentations/
                       asymmetric.yaml``): RandomResizedCrop(32, scale 0.08-1), hflip 0.5, ColorJitter(0.4,0.4,0.2,0.1)
                       p 0.8, gray 0.2; the second view also solarizes with p 0.2
- ``cifar_vicreg``     solo-learn's CIFAR VICReg views (``scripts/pretrain/cifar/vicreg.yaml``): scale 0.2-1,
                       ColorJitter(0.4,0.4,0.2,0.1) p 0.8, gray 0.2, solarize p 0.1, hflip 0.5
- ``imagenet1/2``      BYOL-style asymmetric pair at 224 px (blur p 1.0 / 0.1, solarize p 0 / 0.2)
- ``imagenet_small``   RandomResizedCrop(96, scale 0.05-0.14) with the colour operations, blur p 0.1
- ``mnist``            RandomResizedCrop(28, scale 0.3-1), brightness/contrast jitter p 0.8, no flips (digits
                       are not mirror-symmetric) and no colour (one channel)
- ``mnist_small``      the prediction-branch view for digits: RandomResizedCrop(20, scale 0.3-1) + jitter
- ``none``             the image as it is (photonic unit cells: their augmentations are group actions)
- ``crop_only``        RandomResizedCrop only (the base augmentation of the transformation sweep)
- ``crop_only_small``  the sweep's prediction-branch view: RandomResizedCrop(16, scale 0.2-1) only
- ``crop_only_mnist``  / ``crop_only_mnist_small``: the same for 28-px digits (28 and 14 px, scale 0.3-1)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import kornia.augmentation as K
import torch
from torch import nn

from essl.augmentation.crops import PaddedImages, crop_resize, sample_crop_boxes
from essl.errors import EsslError


@dataclass(frozen=True)
class ViewRecipe:
    size: int
    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    hflip: float = 0.5
    jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.4, 0.1)  # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.0
    resample: str = "bilinear"
    crop: bool = True  # False: no RandomResizedCrop (the image keeps its size)


RECIPES: dict[str, ViewRecipe] = {
    "cifar": ViewRecipe(size=32),
    "cifar_small": ViewRecipe(size=16),
    "cifar_asym1": ViewRecipe(size=32, scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1)),
    "cifar_asym2": ViewRecipe(size=32, scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), solarize_p=0.2),
    "cifar_vicreg": ViewRecipe(size=32, jitter=(0.4, 0.4, 0.2, 0.1), solarize_p=0.1),
    "imagenet1": ViewRecipe(size=224, scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=1.0, resample="bicubic"),
    "imagenet2": ViewRecipe(
        size=224, scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.1, solarize_p=0.2, resample="bicubic"
    ),
    "imagenet_small": ViewRecipe(size=96, scale=(0.05, 0.14), jitter=(0.4, 0.4, 0.2, 0.1), blur_p=0.1),
    "mnist": ViewRecipe(size=28, scale=(0.3, 1.0), hflip=0.0, jitter=(0.4, 0.4, 0.0, 0.0), grayscale_p=0.0),
    "mnist_small": ViewRecipe(size=20, scale=(0.3, 1.0), hflip=0.0, jitter=(0.4, 0.4, 0.0, 0.0), grayscale_p=0.0),
    "crop_only": ViewRecipe(size=32, hflip=0.0, jitter_p=0.0, grayscale_p=0.0),
    "none": ViewRecipe(size=0, crop=False, hflip=0.0, jitter_p=0.0, grayscale_p=0.0),
    "crop_only_small": ViewRecipe(size=16, hflip=0.0, jitter_p=0.0, grayscale_p=0.0),
    "crop_only_mnist": ViewRecipe(size=28, scale=(0.3, 1.0), hflip=0.0, jitter_p=0.0, grayscale_p=0.0),
    "crop_only_mnist_small": ViewRecipe(size=14, scale=(0.3, 1.0), hflip=0.0, jitter_p=0.0, grayscale_p=0.0),
}


def parse_view(name: str) -> tuple[str, int | None]:
    """``"recipe@SIZE"`` → ``("recipe", SIZE)``; ``"recipe"`` → ``("recipe", None)``."""
    base, sep, size = str(name).partition("@")
    if not sep:
        return base, None
    if not size.strip().lstrip("+-").isdigit():
        raise EsslError(f"View {name!r}: the size after '@' must be a whole number of pixels, e.g. {base}@128.")
    return base, int(size)


def get_recipe(name: str, size: int | None = None) -> ViewRecipe:
    """Look up a named recipe; ``size`` overrides its crop size (e.g. ``crop_only`` at 28 px)."""
    if name not in RECIPES:
        raise EsslError(f"Unknown view recipe {name!r}. Known recipes: {', '.join(sorted(RECIPES))}.")
    if size is not None and size < 1:
        raise EsslError(f"View {name}@{size}: the crop size must be at least 1 pixel.")
    recipe = RECIPES[name]
    return replace(recipe, size=size) if size else recipe


def view_recipe(name: str) -> ViewRecipe:
    """A view recipe by name; ``name@SIZE`` changes its crop size (e.g. ``imagenet1@128`` for a quick run)."""
    return resolve_view(name)


ViewSpec = "str | dict"  # a recipe name, ``name@SIZE``, or ``{recipe: name, <ViewRecipe field>: value, ...}``
_TUPLES = {"scale": 2, "ratio": 2, "jitter": 4, "blur_sigma": 2}
_PROBABILITIES = ("hflip", "jitter_p", "grayscale_p", "blur_p", "solarize_p")


def resolve_view(spec: str | dict | ViewRecipe) -> ViewRecipe:
    """A view setting → :class:`ViewRecipe`. ``spec`` is a recipe name (``imagenet1``), ``name@SIZE``
    (``crop_only@24``: the recipe at another crop size), or a mapping that overrides any field of a recipe, e.g.
    ``{recipe: imagenet_small, scale: [0.08, 1.0]}`` (the official crop-scale ablation); an unknown name or field,
    or a value out of range, is an :class:`EsslError` that names it."""
    if isinstance(spec, ViewRecipe):
        return spec
    if isinstance(spec, str):
        base, sep, size = spec.partition("@")
        if sep and not (size.isdigit() and int(size) > 0):
            raise EsslError(
                f"View {spec!r}: the size after '@' must be a whole number of pixels >= 1, e.g. {base}@128."
            )
        return get_recipe(base, int(size) if sep else None)
    if not isinstance(spec, dict) or not isinstance(spec.get("recipe"), str):
        raise EsslError(
            f"A view must be a recipe name, NAME@SIZE, or a mapping with a 'recipe' name and fields to "
            f"change, e.g. {{recipe: imagenet1, scale: [0.08, 1.0]}}; got {spec!r}."
        )
    recipe = resolve_view(spec["recipe"])
    known = {f for f in recipe.__dataclass_fields__}
    changes = {}
    for key, value in spec.items():
        if key == "recipe":
            continue
        if key not in known:
            raise EsslError(f"View {spec!r}: unknown field {key!r}; a view mapping may set {', '.join(sorted(known))}.")
        default = getattr(recipe, key)
        if key in _TUPLES:
            if not (
                isinstance(value, (list, tuple))
                and len(value) == _TUPLES[key]
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            ):
                raise EsslError(f"View field {key} takes {_TUPLES[key]} numbers, e.g. {list(default)}; got {value!r}.")
            value = tuple(float(v) for v in value)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise EsslError(f"View field {key} is true or false, got {value!r}.")
        elif isinstance(default, (int, float)):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise EsslError(f"View field {key} is a number, got {value!r}.")
            if isinstance(default, float):
                value = float(value)
            elif isinstance(value, float) and value.is_integer():
                value = int(value)
        elif key == "resample" and value not in ("bilinear", "bicubic", "nearest"):
            raise EsslError(f"View field resample is bilinear, bicubic or nearest, got {value!r}.")
        changes[key] = value
    out = replace(recipe, **changes)
    check_recipe(out, spec)
    return out


def check_recipe(recipe: ViewRecipe, spec: object) -> None:
    """Ranges: probabilities in [0, 1], a crop size >= 1, 0 < scale low <= high <= 1, 0 < ratio low <= high."""
    bad = [
        f"{k}={getattr(recipe, k)} (a probability in [0, 1])"
        for k in _PROBABILITIES
        if not 0 <= getattr(recipe, k) <= 1
    ]
    if recipe.crop and (not isinstance(recipe.size, int) or recipe.size < 1):
        bad.append(f"size={recipe.size} (a whole number of pixels >= 1)")
    lo, hi = recipe.scale
    if not 0 < lo <= hi <= 1:
        bad.append(f"scale={list(recipe.scale)} (0 < low <= high <= 1)")
    lo, hi = recipe.ratio
    if not 0 < lo <= hi:
        bad.append(f"ratio={list(recipe.ratio)} (0 < low <= high)")
    if any(v < 0 for v in recipe.jitter) or not 0 < recipe.blur_sigma[0] <= recipe.blur_sigma[1]:
        bad.append(
            f"jitter={list(recipe.jitter)} / blur_sigma={list(recipe.blur_sigma)} (jitter >= 0, 0 < sigma low <= high)"
        )
    if bad:
        raise EsslError(f"View {spec!r}: {'; '.join(bad)}.")


def view_name(spec: str | dict) -> str:
    """A short label of a view setting for tables and file names (``imagenet1``, ``crop_only@24``,
    ``imagenet_small{scale=0.08-1}``)."""
    if isinstance(spec, str):
        return spec
    fields = ",".join(
        f"{k}={'-'.join(f'{x:g}' for x in v) if isinstance(v, (list, tuple)) else v}"
        for k, v in spec.items()
        if k != "recipe"
    )
    return f"{spec.get('recipe')}{{{fields}}}"


def build_view(
    recipe: ViewRecipe, channels: int, mean: tuple[float, ...] | None = None, std: tuple[float, ...] | None = None
) -> View:
    """Module: uint8 or [0, 1] float batch ``(N, C, H, W)`` → augmented float batch, in [0, 1], or normalised
    when ``mean``/``std`` are given. (Training normalises after any group action, so that photometric groups
    such as colour inversion act on [0, 1] images.) A :class:`~essl.augmentation.crops.PaddedImages` batch (a
    streamed image folder) is cropped inside each image's valid region."""
    ops: list[nn.Module] = []
    if recipe.hflip > 0:
        ops.append(K.RandomHorizontalFlip(p=recipe.hflip))
    b, c, s, h = recipe.jitter
    if channels == 1:
        s, h = 0.0, 0.0  # saturation and hue do not exist for one channel
    if recipe.jitter_p > 0 and any((b, c, s, h)):
        ops.append(K.ColorJitter(b, c, s, h, p=recipe.jitter_p))
    if recipe.grayscale_p > 0 and channels == 3:
        ops.append(K.RandomGrayscale(p=recipe.grayscale_p))
    if recipe.blur_p > 0:
        kernel = 2 * round(0.05 * recipe.size) + 1  # ~10% of the image, odd (SimCLR)
        ops.append(K.RandomGaussianBlur((kernel, kernel), recipe.blur_sigma, p=recipe.blur_p))
    if recipe.solarize_p > 0:
        ops.append(K.RandomSolarize(thresholds=0.0, additions=0.0, p=recipe.solarize_p))
    if mean is not None and std is not None:
        ops.append(Normalize(mean, std))
    return View(recipe, nn.Sequential(*ops))


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255) if x.dtype == torch.uint8 else x.float()


class View(nn.Module):
    """A recipe's RandomResizedCrop followed by its other operations (``rest``), per sample."""

    def __init__(self, recipe: ViewRecipe, rest: nn.Sequential):
        super().__init__()
        self.recipe = recipe
        self.crop = (
            K.RandomResizedCrop(
                (recipe.size, recipe.size), scale=recipe.scale, ratio=recipe.ratio, resample=recipe.resample.upper()
            )
            if recipe.crop
            else None
        )
        self.rest = rest

    def forward(self, x: torch.Tensor | PaddedImages) -> torch.Tensor:
        if isinstance(x, PaddedImages):
            if self.crop is None:
                raise EsslError(
                    "A view without RandomResizedCrop cannot take padded images of varied sizes; use a "
                    "recipe with a crop for streamed image folders."
                )
            boxes = sample_crop_boxes(x.sizes, self.recipe.scale, self.recipe.ratio)
            v = crop_resize(_to_float(x.images), boxes, self.recipe.size, self.recipe.resample)
            if self.recipe.resample == "bicubic":
                v = v.clamp_(0, 1)  # as the 8-bit result of a PIL bicubic resize
        else:
            v = _to_float(x)
            if self.crop is not None:
                v = self.crop(v)
        return self.rest(v)


class Normalize(nn.Module):
    """(x - mean) / std per channel, for [0, 1] float batches (uint8 is scaled first)."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self.mean) / self.std
