"""Each loss against a plain computation written here with explicit loops."""

import math

import pytest
import torch

from essl.objectives import barlow_twins_loss, info_nce, nt_xent, prediction_loss, simsiam_loss


def _cos(a, b):
    return float((a @ b / (a.norm() * b.norm())).detach())


def plain_cross_view_infonce(z1, z2, t):
    n, total = len(z1), 0.0
    for a, b in ((z1, z2), (z2, z1)):
        for i in range(n):
            logits = [_cos(a[i], b[j]) / t for j in range(n)]
            total += -(logits[i] - math.log(sum(math.exp(x) for x in logits)))
    return total / (2 * n)


def plain_nt_xent(z1, z2, t):
    z = torch.cat([z1, z2])
    n2, total = len(z), 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        others = [_cos(z[i], z[j]) / t for j in range(n2) if j != i]
        total += -(_cos(z[i], z[pos]) / t - math.log(sum(math.exp(x) for x in others)))
    return total / n2


@pytest.mark.parametrize("t", [0.1, 0.5])
def test_info_nce_matches_plain(t):
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    assert info_nce(z1, z2, t).item() == pytest.approx(plain_cross_view_infonce(z1, z2, t), rel=1e-5)


def test_nt_xent_matches_plain():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(5, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64)
    assert nt_xent(z1, z2, 0.1).item() == pytest.approx(plain_nt_xent(z1, z2, 0.1), rel=1e-5)


def test_info_nce_is_low_for_aligned_views_and_high_for_random():
    z = torch.randn(32, 16)
    assert info_nce(z, z + 1e-3 * torch.randn_like(z), 0.1) < 0.05
    assert info_nce(torch.randn(32, 16), torch.randn(32, 16), 0.5) > 2.5


def test_simsiam_matches_plain_and_stops_gradient():
    g = torch.Generator().manual_seed(2)
    p1, p2, z1, z2 = (torch.randn(4, 3, generator=g, requires_grad=True) for _ in range(4))
    plain = 0.5 * (-sum(_cos(p1[i], z2[i]) for i in range(4)) / 4 - sum(_cos(p2[i], z1[i]) for i in range(4)) / 4)
    loss = simsiam_loss(p1, p2, z1, z2)
    assert loss.item() == pytest.approx(plain, rel=1e-5)
    loss.backward()
    assert z1.grad is None and z2.grad is None and p1.grad is not None


def plain_barlow(z1, z2, lambd):
    n, d = z1.shape

    def standardise(z):
        out = torch.empty_like(z)
        for k in range(d):
            col = z[:, k]
            mean = sum(col) / n
            var = sum((c - mean) ** 2 for c in col) / n
            out[:, k] = (col - mean) / math.sqrt(var + 1e-5)
        return out

    a, b = standardise(z1), standardise(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[k, i] * b[k, j] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c**2
    return float(loss)


def test_barlow_twins_matches_plain():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    assert barlow_twins_loss(z1, z2, 0.0051).item() == pytest.approx(plain_barlow(z1, z2, 0.0051), rel=1e-6)


def test_barlow_twins_is_zero_for_identical_decorrelated_views():
    z = torch.linalg.qr(torch.randn(64, 8, dtype=torch.float64))[0] * 8  # orthogonal columns
    z = z - z.mean(0)
    loss = barlow_twins_loss(z, z, 0.0051).item()
    assert loss < 0.1  # diagonal ≈ 1 and off-diagonal ≈ 0 (not exact: centring breaks perfect orthogonality)


def test_prediction_loss_is_cross_entropy_with_accuracy():
    logits = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0]])
    labels = torch.tensor([0, 1])
    loss, acc = prediction_loss(logits, labels)
    plain = 0.5 * (-(2 - math.log(math.exp(2) + 3)) - (0 - math.log(math.exp(3) + 3)))
    assert loss.item() == pytest.approx(plain, rel=1e-6)
    assert acc.item() == 0.5
