"""View settings: a recipe name, NAME@SIZE, or a mapping overriding any recipe field, in pretraining and the sweep."""

import dataclasses

import pytest

from essl.augmentation import RECIPES, resolve_view, view_name
from essl.errors import EsslError
from essl.experiments.sweep import build_spec
from essl.training.config import load_config
from essl.training.pretrain import Pretrainer


def test_names_sizes_and_mappings():
    assert resolve_view("imagenet1") == RECIPES["imagenet1"]
    assert resolve_view("crop_only@24") == dataclasses.replace(RECIPES["crop_only"], size=24)
    ablation = resolve_view({"recipe": "imagenet_small", "scale": [0.08, 1.0]})  # the official crop-scale ablation
    assert ablation == dataclasses.replace(RECIPES["imagenet_small"], scale=(0.08, 1.0))
    both = resolve_view({"recipe": "cifar@24", "hflip": 0, "blur_p": 0.5, "resample": "bicubic"})
    assert (both.size, both.hflip, both.blur_p, both.resample) == (24, 0.0, 0.5, "bicubic")
    assert view_name({"recipe": "imagenet_small", "scale": [0.08, 1.0]}) == "imagenet_small{scale=0.08-1}"


@pytest.mark.parametrize(
    "spec, match",
    [
        ("imagenet3", "Unknown view recipe 'imagenet3'"),
        ("mnist@0", "whole number of pixels >= 1"),
        ("mnist@big", "whole number of pixels"),
        ({"scale": [0.1, 1]}, "a mapping with a 'recipe' name"),
        ({"recipe": "mnist", "scal": [0.1, 1]}, "unknown field 'scal'"),
        ({"recipe": "mnist", "scale": [0.1]}, "scale takes 2 numbers"),
        ({"recipe": "mnist", "scale": [0.5, 0.1]}, r"scale=\[0.5, 0.1\] \(0 < low <= high <= 1\)"),
        ({"recipe": "mnist", "hflip": 2}, r"hflip=2.0 \(a probability in \[0, 1\]\)"),
        ({"recipe": "mnist", "size": 12.5}, "size=12.5"),
        ({"recipe": "mnist", "crop": "yes"}, "crop is true or false"),
    ],
)
def test_bad_view_settings_name_themselves(spec, match):
    with pytest.raises(EsslError, match=match):
        resolve_view(spec)


def test_mappings_in_pretraining_and_equivariance_entries(tmp_path):
    cfg = load_config(
        "mnist5k-esimclr",
        [
            "views=[{recipe: mnist, scale: [0.5, 1.0]}, mnist@24]",
            "subset=128",
            "batch_size=64",
            "num_threads=1",
            "equivariance=[{group: rotation, weight: 0.4, view: {recipe: mnist_small, size: 16}, head: small}]",
        ],
    )
    trainer = Pretrainer(cfg, tmp_path / "unused", progress=False)
    assert trainer.views[0].recipe.scale == (0.5, 1.0) and trainer.views[1].recipe.size == 24
    assert trainer.tasks[0][1].recipe.size == 16
    x1, x2, predictions = trainer.make_inputs(trainer.train.images[:4])
    assert x2.shape[-1] == 24 and predictions[0][0].shape[-1] == 16
    with pytest.raises(EsslError, match="unknown field 'sise'"):
        load_config("mnist5k-esimclr", ["views=[{recipe: mnist, sise: 20}, mnist]"])
    with pytest.raises(EsslError, match="views must be a list of view recipes"):
        load_config("mnist5k-esimclr", ["views=[3, mnist]"])


def test_sweep_accepts_sizes_and_mappings():
    spec, base = build_spec(
        "mnist5k-simclr",
        [],
        ["rotation"],
        1,
        0.4,
        "knn",
        view="crop_only@24",
        pred_view="{recipe: crop_only_small, scale: [0.5, 1.0]}",
    )
    assert spec.view == "crop_only@24" and base.views == ["crop_only@24", "crop_only@24"]
    assert spec.pred_view == {"recipe": "crop_only_small", "scale": [0.5, 1.0]}
    with pytest.raises(EsslError, match="Unknown view recipe"):
        build_spec("mnist5k-simclr", [], ["rotation"], 1, 0.4, "knn", view="crop_onl@24")
