"""Finite transformation groups acting on image batches.

A group ``G`` of order ``n`` is used in two ways (Dangovski et al. 2022, its method and its
invariance-vs-equivariance transformation sweep):

- as an **equivariance target**: :meth:`TransformationGroup.orbit` applies *every* element to every image and
  returns the labels, so a head can be trained to predict ``g`` from ``f(g·x)`` (the E-SSL loss);
- as an **invariance**: :meth:`TransformationGroup.sample` applies one uniformly drawn element per image, used as
  an extra augmentation of the SSL views (the "I-SSL" baseline of the transformation sweep). ``sample(x,
  repeats=r)`` is also the cheaper, sampled form of the prediction target (``r`` drawn elements per image).

Groups act on float image batches ``(N, C, H, W)`` with values in [0, 1]; training applies them *before*
normalisation, so photometric actions such as colour inversion (``x → 1 − x``) mean what they say.

A new group only implements :meth:`apply` (element ``k`` on a whole batch). Elements are numbered
``0..order-1`` and element 0 is the identity. Sets of transformations that are true groups (rotations, flips,
jigsaw permutations, half-cell translations, colour inversion) also give :meth:`compose` and :meth:`inverse`;
"transformation sets" that are not groups (blur levels, grayscale: neither is invertible) keep the same interface
for prediction and sampling and raise :class:`~essl.errors.EsslError` from those two methods.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from essl.errors import EsslError


class TransformationGroup:
    """Base class: subclasses set ``name`` and ``order`` and implement :meth:`apply`.

    Optional overrides: :meth:`check_shape` (inputs the action is defined on), :meth:`compose` and
    :meth:`inverse` (true groups only).
    """

    name: str = "group"
    order: int = 1
    #: False for a continuous random transformation (usable as an invariance only; nothing to predict).
    finite: bool = True
    #: Readable names of the elements in label order (plots, reports); empty: ``g0, g1, ...``.
    elements: tuple[str, ...] = ()

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Apply element ``k`` to every image of ``x`` (N, C, H, W)."""
        raise NotImplementedError

    def element_names(self) -> list[str]:
        """Readable names of the elements, in label order (``g0, g1, ...`` unless the group names them)."""
        return list(self.elements) if self.elements else [f"g{k}" for k in range(self.order)]

    # ----------------------------------------------------------------------------------- input validation
    def check_shape(self, shape: Sequence[int]) -> None:
        """Raise :class:`EsslError` if the action is not defined (or degenerate) on images of ``shape``
        ``(N, C, H, W)`` (or ``(C, H, W)``). The base action accepts any batch of images."""
        if len(shape) not in (3, 4):
            raise EsslError(
                f"The {self.name!r} transformation acts on image batches (N, C, H, W); got a tensor "
                f"of shape {tuple(shape)}."
            )

    # ----------------------------------------------------------------------------------- group structure
    def compose(self, a: int, b: int) -> int:
        """The element ``c`` with ``apply(apply(x, b), a) == apply(x, c)`` (``a`` after ``b``)."""
        raise EsslError(f"The {self.name!r} transformations are not a group; they have no composition table.")

    def inverse(self, k: int) -> int:
        """The element that undoes ``k``: ``apply(apply(x, k), inverse(k)) == x``."""
        raise EsslError(f"The {self.name!r} transformation is not invertible (element {k} loses information).")

    def apply_inverse(self, x: torch.Tensor, k: int) -> torch.Tensor:
        """Undo element ``k`` on a batch (only for invertible actions)."""
        return self.apply(x, self.inverse(k))

    # ----------------------------------------------------------------------------------- the two uses
    def act(self, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Apply element ``g[i]`` to image ``x[i]`` (per-sample elements)."""
        self.check_shape(x.shape)
        out = x.clone()
        for k in range(self.order):
            mask = g == k
            if mask.any():
                out[mask] = self.apply(x[mask], k).to(out.dtype)
        return out

    def orbit(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All elements on all images: ``(order*N, C, H, W)`` in element-major order, and labels ``(order*N,)``.

        Block ``k`` (rows ``k*N .. (k+1)*N-1``) is ``apply(x, k)`` with label ``k``, as in the official
        ``rotate_images`` of rdangovs/essl.
        """
        self.check_shape(x.shape)
        n = x.shape[0]
        out = torch.cat([self.apply(x, k) for k in range(self.order)])
        labels = torch.arange(self.order, device=x.device).repeat_interleave(n)
        return out, labels

    def sample(
        self, x: torch.Tensor, generator: torch.Generator | None = None, repeats: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One uniformly drawn element per image (the invariance form). Returns ``(g·x, g)``.

        ``repeats = r`` draws ``r`` elements per image independently (with replacement) and returns
        ``(r*N, C, H, W)`` in draw-major order: the sampled form of the prediction objective, for groups too
        large to predict on the whole orbit (the 24-element jigsaw; one draw per image as in Understanding-ESSL,
        Wang et al., NeurIPS 2024).
        """
        if repeats > 1:
            x = x.repeat(repeats, *([1] * (x.dim() - 1)))
        g = torch.randint(self.order, (x.shape[0],), generator=generator, device="cpu").to(x.device)
        return self.act(x, g), g

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, order={self.order})"


class Involution(TransformationGroup):
    """A two-element group {identity, s} with s∘s = identity (flips, colour inversion)."""

    order = 2

    def compose(self, a: int, b: int) -> int:
        return int(a) ^ int(b)

    def inverse(self, k: int) -> int:
        return int(k)


class ProductGroup(TransformationGroup):
    """Product ``A × B``: element ``k = a * |B| + b`` applies ``b`` of B, then ``a`` of A.

    With commuting factors (flips × inversion, translations × photometric groups) this is the direct product.
    With non-commuting factors such as rotation × hflip the ``|A|·|B|`` elements ``A(a)∘B(b)`` still form a group
    (here the dihedral group D4), but composing two of them is not done component-wise; :meth:`apply_inverse`
    undoes the components in reverse order and is exact either way. :meth:`decode` recovers the components of a
    label, :meth:`encode` builds one.
    """

    def __init__(self, first: TransformationGroup, second: TransformationGroup):
        self.first, self.second = first, second
        self.name = f"{first.name}x{second.name}"
        self.order = first.order * second.order

    def decode(self, k: torch.Tensor | int) -> tuple:
        """Label of the product → (label in the first factor, label in the second)."""
        return k // self.second.order, k % self.second.order

    def encode(self, a: torch.Tensor | int, b: torch.Tensor | int) -> torch.Tensor | int:
        """(label in the first factor, label in the second) → label of the product."""
        return a * self.second.order + b

    def check_shape(self, shape: Sequence[int]) -> None:
        self.first.check_shape(shape)
        self.second.check_shape(shape)

    def element_names(self) -> list[str]:
        """``a+b`` for label ``k = a·|B| + b``."""
        return [f"{a}+{b}" for a in self.first.element_names() for b in self.second.element_names()]

    def apply(self, x: torch.Tensor, k: int) -> torch.Tensor:
        a, b = self.decode(k)
        return self.first.apply(self.second.apply(x, b), a)

    def apply_inverse(self, x: torch.Tensor, k: int) -> torch.Tensor:
        a, b = self.decode(k)
        return self.second.apply_inverse(self.first.apply_inverse(x, a), b)

    def inverse(self, k: int) -> int:
        raise EsslError(
            f"The product {self.name!r} has no element-wise inverse table (its factors need not "
            f"commute); undo an element with apply_inverse(x, k)."
        )

    def compose(self, a: int, b: int) -> int:
        raise EsslError(f"The product {self.name!r} has no composition table (its factors need not commute).")
