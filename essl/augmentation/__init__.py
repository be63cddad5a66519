"""Batched per-sample augmentation recipes (see :mod:`essl.augmentation.views`)."""

from essl.augmentation.views import (
    RECIPES,
    Normalize,
    ViewRecipe,
    build_view,
    get_recipe,
    resolve_view,
    view_name,
    view_recipe,
)

__all__ = ["RECIPES", "Normalize", "ViewRecipe", "build_view", "get_recipe", "resolve_view", "view_name", "view_recipe"]
