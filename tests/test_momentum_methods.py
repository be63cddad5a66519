"""BYOL, VICReg and MoCo v3 building blocks against plain computations written here with explicit loops: the
losses, the momentum (EMA) update and its cosine schedule, and the heads.

The losses compute in float32 (as under autocast), hence relative tolerances of 1e-6 against float64 references.
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from essl.models import byol_predictor, ema_update, frozen_copy, method_predictor, mocov3_predictor, projector
from essl.objectives import byol_loss, mocov3_loss, vicreg_loss, vicreg_terms
from essl.training.schedule import momentum_schedule


def _rand(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=torch.float64) for _ in range(4)]


def _unit(v):
    return v / math.sqrt(sum(float(x) ** 2 for x in v))


# --------------------------------------------------------------------------------------------------- BYOL
def plain_byol(p1, p2, t1, t2):
    total = 0.0
    for p, t in ((p1, t2), (p2, t1)):
        for i in range(len(p)):
            a, b = _unit(p[i]), _unit(t[i])
            total += sum((float(x) - float(y)) ** 2 for x, y in zip(a, b)) / len(p)  # ‖p̄ − t̄‖², batch mean
    return total


def test_byol_matches_plain_and_stops_gradient_into_the_target():
    p1, p2, t1, t2 = (x.requires_grad_() for x in _rand(5, 3, seed=1))
    loss = byol_loss(p1, p2, t1, t2)
    assert loss.item() == pytest.approx(plain_byol(p1.detach(), p2.detach(), t1.detach(), t2.detach()), rel=1e-6)
    loss.backward()
    assert t1.grad is None and t2.grad is None and p1.grad is not None
    assert byol_loss(t2, t1, t1, t2).item() == pytest.approx(0.0, abs=1e-12)  # aligned: zero
    assert 0.0 <= byol_loss(*_rand(64, 8, seed=2)).item() <= 8.0


# ------------------------------------------------------------------------------------------------- VICReg
def plain_vicreg(z1, z2, lam=25.0, mu=25.0, nu=1.0):
    n, d = z1.shape
    inv = sum((float(z1[i, j]) - float(z2[i, j])) ** 2 for i in range(n) for j in range(d)) / (n * d)

    def var(z):
        total = 0.0
        for j in range(d):
            col = [float(z[i, j]) for i in range(n)]
            m = sum(col) / n
            std = math.sqrt(sum((c - m) ** 2 for c in col) / (n - 1) + 1e-4)
            total += max(0.0, 1.0 - std)
        return total / d

    def cov(z):
        means = [sum(float(z[i, j]) for i in range(n)) / n for j in range(d)]
        total = 0.0
        for a in range(d):
            for b in range(d):
                if a != b:
                    c = sum((float(z[i, a]) - means[a]) * (float(z[i, b]) - means[b]) for i in range(n)) / (n - 1)
                    total += c**2
        return total / d

    return lam * inv + mu * (var(z1) + var(z2)) + nu * (cov(z1) + cov(z2)), inv


@pytest.mark.parametrize("scale", [0.3, 2.0])  # below and above γ = 1: the variance hinge is active or not
def test_vicreg_matches_plain(scale):
    z1, z2, _, _ = _rand(7, 4, seed=3)
    z1, z2 = z1 * scale, (z1 + 0.5 * z2) * scale
    plain, inv = plain_vicreg(z1, z2)
    assert vicreg_loss(z1, z2).item() == pytest.approx(plain, rel=1e-6)
    assert vicreg_terms(z1, z2)["invariance"].item() == pytest.approx(inv, rel=1e-6)
    assert vicreg_loss(z1, z2, 1.0, 2.0, 3.0).item() == pytest.approx(plain_vicreg(z1, z2, 1.0, 2.0, 3.0)[0], rel=1e-6)


def test_vicreg_variance_term_is_zero_for_spread_out_decorrelated_embeddings():
    z = torch.linalg.qr(torch.randn(256, 8, dtype=torch.float64))[0] * 40  # orthogonal columns, std ≈ 2.5
    t = vicreg_terms(z, z)
    assert t["invariance"].item() == 0.0 and t["variance"].item() == 0.0 and t["covariance"].item() < 0.05


# ------------------------------------------------------------------------------------------------ MoCo v3
def plain_mocov3(q1, q2, k1, k2, t):
    total = 0.0
    for q, k in ((q1, k2), (q2, k1)):
        n, ce = len(q), 0.0
        for i in range(n):
            logits = [float(_unit(q[i]) @ _unit(k[j])) / t for j in range(n)]
            ce += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
        total += 2 * t * ce / n
    return total


@pytest.mark.parametrize("t", [0.2, 1.0])
def test_mocov3_matches_plain_and_stops_gradient_into_the_keys(t):
    q1, q2, k1, k2 = (x.requires_grad_() for x in _rand(6, 5, seed=4))
    loss = mocov3_loss(q1, q2, k1, k2, t)
    assert loss.item() == pytest.approx(plain_mocov3(*(x.detach() for x in (q1, q2, k1, k2)), t), rel=1e-6)
    loss.backward()
    assert k1.grad is None and k2.grad is None and q2.grad is not None


# ----------------------------------------------------------------------------------- momentum (EMA) target
def test_ema_update_matches_plain_and_target_is_frozen():
    torch.manual_seed(0)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    target = frozen_copy(online)
    assert all(not p.requires_grad for p in target.parameters())
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))  # ξ = θ at step 0
    with torch.no_grad():
        for p in online.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in target.parameters()]
    ema_update(target, online, 0.9)
    for xi, old, theta in zip(target.parameters(), before, online.parameters()):
        torch.testing.assert_close(xi, 0.9 * old + 0.1 * theta, rtol=0, atol=1e-6)
    ema_update(target, online, 1.0)  # τ = 1: frozen
    ema_update(target, online, 0.0)  # τ = 0: a copy
    assert all(torch.equal(a, b) for a, b in zip(target.parameters(), online.parameters()))
    with pytest.raises(ValueError):
        ema_update(nn.Linear(3, 4), online, 0.5)


def test_momentum_schedule_is_byol_cosine():
    taus = momentum_schedule(0.99, 1.0, 10)
    plain = [1 - (1 - 0.99) * (math.cos(math.pi * k / 10) + 1) / 2 for k in range(10)]
    np.testing.assert_allclose(taus, plain, rtol=0, atol=1e-12)
    assert taus[0] == 0.99 and np.all(np.diff(taus) > 0) and taus[-1] < 1.0


# -------------------------------------------------------------------------------------------------- heads
def _kinds(head):
    return [
        type(m).__name__
        + (
            f"({m.in_features}->{m.out_features},{'b' if m.bias is not None else 'nb'})"
            if isinstance(m, nn.Linear)
            else ""
        )
        for m in head
    ]


def test_heads_match_their_papers():
    assert _kinds(projector("byol", 512)) == ["Linear(512->4096,b)", "BatchNorm1d", "ReLU", "Linear(4096->256,b)"]
    assert _kinds(byol_predictor(256, 4096)) == ["Linear(256->4096,b)", "BatchNorm1d", "ReLU", "Linear(4096->256,b)"]
    moco = projector("mocov3", 512)
    assert _kinds(moco) == ["Linear(512->4096,nb)", "BatchNorm1d", "ReLU", "Linear(4096->256,nb)", "BatchNorm1d"]
    assert not moco[-1].affine
    assert _kinds(mocov3_predictor(256, 4096)) == [
        "Linear(256->4096,nb)",
        "BatchNorm1d",
        "ReLU",
        "Linear(4096->256,nb)",
    ]
    assert _kinds(projector("vicreg_cifar", 512)) == [
        "Linear(512->2048,b)",
        "BatchNorm1d",
        "ReLU",
        "Linear(2048->2048,b)",
        "BatchNorm1d",
        "ReLU",
        "Linear(2048->2048,nb)",
    ]
    assert _kinds(projector("vicreg_imagenet", 2048))[-1] == "Linear(8192->8192,nb)"
    assert method_predictor("simclr", 8, 4) is None and method_predictor("vicreg", 8, 4) is None
    assert _kinds(method_predictor("simsiam", 8, 4))[0] == "Linear(8->4,nb)"


# ------------------------------------------------------------------------------------------------ presets
@pytest.mark.parametrize("method", ["byol", "vicreg", "mocov3"])
def test_cifar_presets_pair_up_and_take_a_step(method):
    """cifar10-e<m> is cifar10-<m> plus the paper's rotation task; both build and take a training step."""
    from essl.groups import make_group
    from essl.training.config import load_config
    from essl.training.model import ESSLModel

    base, essl = load_config(f"cifar10-{method}"), load_config(f"cifar10-e{method}")
    diff = {k for k, v in essl.to_dict().items() if base.to_dict()[k] != v}
    assert diff == {"equivariance"}
    (task,) = essl.equivariance
    assert (task.group, task.view, task.head) == ("rotation", "cifar_small", "cifar_simclr")
    assert base.optimizer == "lars" and base.lars_clip and base.batch_size == 256 and base.epochs == 1000
    torch.manual_seed(0)
    model = ESSLModel(essl, 3).train()
    x1, x2, crops = torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), torch.randn(4, 3, 16, 16)
    out = model(x1, x2, [make_group("rotation").orbit(crops)])
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and model.backbone.conv1.weight.grad is not None
    assert (model.target is not None) == (method != "vicreg")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"target_momentum": 1.01}, "target_momentum"),
        ({"target_momentum": 0.999, "target_momentum_final": 0.99}, "target_momentum"),
        ({"target_momentum": -0.1}, "target_momentum"),
        ({"vicreg_cov": -1.0}, "vicreg_cov"),
        ({"lars_clip": "yes"}, "lars_clip"),
        ({"method": "moco"}, "method must be one of"),
    ],
)
def test_bad_momentum_method_settings_are_refused(values, message):
    from essl.errors import EsslError
    from essl.training.config import config_from_dict

    with pytest.raises(EsslError, match=message):
        config_from_dict(values)
