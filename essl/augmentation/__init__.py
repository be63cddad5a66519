"""Batched per-sample augmentation recipes (see :mod:`essl.augmentation.views`)."""

from essl.augmentation.views import RECIPES, Normalize, ViewRecipe, build_view, get_recipe, view_recipe

__all__ = ["RECIPES", "Normalize", "ViewRecipe", "build_view", "get_recipe", "view_recipe"]
