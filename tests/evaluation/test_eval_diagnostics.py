"""Equivariance diagnostics: an exactly invariant encoder gives similarity 1 and chance-level prediction of g;
an encoder that reveals g gives high accuracy; the orbit features match a plain per-element computation."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from essl.augmentation import Normalize
from essl.data import ImageData
from essl.evaluation.diagnostics import OrbitAveraged, diagnose, equivariance_scores, invariance_scores, orbit_features
from essl.evaluation.evaluate import evaluate_diagnostics
from essl.evaluation.loading import EvalTarget
from essl.groups import make_group
from essl.models import SmallCNN

MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def corner_images(n, seed, size=12):
    """Noisy images with a bright blob somewhere in the top-left quadrant (so every rotation moves it)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 50, (n, 3, size, size), generator=g, dtype=torch.uint8)
    for i in range(n):
        r, c = torch.randint(0, size // 2 - 2, (2,), generator=g).tolist()
        x[i, :, r : r + 3, c : c + 3] = 250
    return x


class QuadrantMeans(nn.Module):
    """Reveals the rotation: the mean of each image quadrant (4 features)."""

    feature_dim = 4

    def forward(self, x):
        h, w = x.shape[-2] // 2, x.shape[-1] // 2
        return torch.stack(
            [
                x[..., :h, :w].mean((1, 2, 3)),
                x[..., :h, w:].mean((1, 2, 3)),
                x[..., h:, :w].mean((1, 2, 3)),
                x[..., h:, w:].mean((1, 2, 3)),
            ],
            1,
        )


def small_cnn():
    torch.manual_seed(0)
    return SmallCNN(3, widths=(8, 16)).eval()


def test_orbit_features_match_per_element_reference():
    x, net, group = corner_images(10, 0), small_cnn(), make_group("rotation*hflip")
    got = orbit_features(net, x, group, MEAN, STD, batch_size=16)  # several batches of 2 images x 8 elements
    norm = Normalize(MEAN, STD)
    with torch.no_grad():
        for k in range(group.order):  # the group acts on [0, 1] images, then normalisation
            want = net(norm(group.apply(x.float() / 255, k)))
            torch.testing.assert_close(got[k], want, rtol=1e-4, atol=1e-5)


def test_exactly_invariant_encoder_scores_one_and_chance():
    group = make_group("rotation")
    invariant = OrbitAveraged(small_cnn(), group)
    r = diagnose(invariant, corner_images(80, 1), corner_images(40, 2), group, MEAN, STD)
    assert min(r["invariance"]["per_element"]) > 1 - 1e-5
    assert r["invariance"]["mean"] == pytest.approx(1.0, abs=1e-5)
    assert abs(r["equivariance"]["accuracy"] - 25.0) <= 2.0  # chance: f(g·x) is the same for every g
    assert r["equivariance"]["chance"] == 25.0


def test_encoder_that_reveals_g_is_predictable_and_not_invariant():
    group = make_group("rotation")
    r = diagnose(QuadrantMeans(), corner_images(80, 1), corner_images(40, 2), group, MEAN, STD)
    assert r["equivariance"]["accuracy"] >= 99.0 and min(r["equivariance"]["per_element"]) >= 97.5
    assert r["invariance"]["per_element"][0] == pytest.approx(1.0)
    assert max(r["invariance"]["per_element"][1:]) < 0.99
    # the plain CNN is in between: not invariant, and its rotation is well above chance
    cnn = diagnose(small_cnn(), corner_images(80, 1), corner_images(40, 2), group, MEAN, STD)
    assert cnn["equivariance"]["accuracy"] > 40.0


def test_scores_against_hand_computation():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(3, 5, 4, generator=g)
    inv = invariance_scores(feats)
    for k in range(3):
        want = F.cosine_similarity(feats[0], feats[k], dim=1).mean().item()
        assert inv["per_element"][k] == pytest.approx(want, abs=1e-6)
    assert inv["mean"] == pytest.approx((inv["per_element"][1] + inv["per_element"][2]) / 2)
    # features that carry g exactly: a one-hot of the element in the first 3 dimensions
    onehot = torch.eye(3)[:, None, :].expand(3, 30, 3) + 0.01 * torch.randn(3, 30, 3, generator=g)
    eq = equivariance_scores(onehot, onehot.flip(1))
    assert eq["accuracy"] == 100.0 and eq["confusion"] == [[30, 0, 0], [0, 30, 0], [0, 0, 30]]


def test_evaluate_diagnostics_writes_result(tmp_path):
    train = ImageData(corner_images(40, 1), torch.zeros(40, dtype=torch.long), 1, MEAN, STD, "corners-train")
    test = ImageData(corner_images(20, 2), torch.zeros(20, dtype=torch.long), 1, MEAN, STD, "corners-test")
    target = EvalTarget(
        QuadrantMeans(),
        train,
        test,
        tmp_path,
        {"path": "x", "epoch": 2, "sha256": "0"},
        {"kind": "run", "dataset": "corners", "equivariance": [{"group": "rotation", "weight": 0.4}]},
    )
    evaluate_diagnostics(target, "rotation", max_train=30, precision="fp32", device="cpu")
    saved = json.loads((tmp_path / "eval" / "diagnostics-rotation-maxtrain30.json").read_text())  # not the default
    assert saved["evaluation"] == "diagnostics" and saved["protocol"]["predicted_in_pretraining"]
    assert saved["images"] == {"train": 30, "train_available": 40, "test": 20, "test_available": 20}
    assert len(saved["invariance"]["per_element"]) == 4 and saved["equivariance"]["accuracy"] > 95


def test_diagnostics_hold_at_most_max_train_plus_max_test_orbits(monkeypatch):
    """The orbit features kept are bounded by the caps, whatever the dataset's size; the subsets are seeded."""
    import essl.evaluation.diagnostics as diagnostics

    seen: list[int] = []
    features = diagnostics.orbit_features

    def counting(backbone, images, *args, **kwargs):
        out = features(backbone, images, *args, **kwargs)
        seen.append(out.shape[1])
        return out

    monkeypatch.setattr(diagnostics, "orbit_features", counting)
    train, test = corner_images(50, 1), corner_images(40, 2)
    a = diagnostics.diagnose(QuadrantMeans(), train, test, make_group("rotation"), MEAN, STD, max_train=12, max_test=7)
    assert sorted(seen) == [7, 12]
    assert a["images"] == {"train": 12, "train_available": 50, "test": 7, "test_available": 40}
    b = diagnostics.diagnose(QuadrantMeans(), train, test, make_group("rotation"), MEAN, STD, max_train=12, max_test=7)
    assert a["invariance"] == b["invariance"] and a["equivariance"] == b["equivariance"]
    whole = diagnostics.diagnose(QuadrantMeans(), train, test, make_group("rotation"), MEAN, STD, max_test=None)
    assert whole["images"]["test"] == 40
