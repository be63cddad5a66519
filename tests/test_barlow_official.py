"""Barlow Twins as the official code computes it on several processes (rdangovs/essl imagenet/barlowtwins/main.py):
the cross-correlation summed with the non-differentiable ``torch.distributed.all_reduce``, then DDP's gradient
average. Two gloo processes show that this gradient is the exact one divided by W, and that essl's
``barlow_official_gpus`` mode (:func:`essl.objectives.scale_gradient`) reproduces it."""

from __future__ import annotations

import time
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from essl.objectives import barlow_twins_loss, scale_gradient
from essl.objectives.barlow_twins import _standardise
from essl.training.config import load_config
from essl.training.model import ESSLModel

pytestmark = pytest.mark.skipif(
    not (dist.is_available() and dist.is_gloo_available()),
    reason="torch.distributed with the gloo backend is not available",
)

WORLD, N, D, LAMBD = 2, 8, 6, 0.0051


def _data():
    g = torch.Generator().manual_seed(0)
    x1, x2 = torch.randn(N, D, generator=g), torch.randn(N, D, generator=g)
    layer = nn.Linear(D, 5)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(5, D, generator=g))
        layer.bias.copy_(torch.randn(5, generator=g))
    return x1, x2, layer


def _official_loss(z1, z2, batch_size):
    """imagenet/barlowtwins/main.py, forward: c = bn(z1).T @ bn(z2) (SyncBatchNorm: global statistics, here
    essl's differentiable standardisation over all ranks); c.div_(batch_size); torch.distributed.all_reduce(c)."""
    n_total = torch.tensor(float(batch_size))
    c = _standardise(z1, n_total).T @ _standardise(z2, n_total)
    c.div_(batch_size)
    with warnings.catch_warnings():  # torch warns that c10d::allreduce_ has no autograd kernel: that is the point
        warnings.simplefilter("ignore")
        dist.all_reduce(c)
    on_diag = (torch.diagonal(c) - 1).pow(2).sum()
    off_diag = c.pow(2).sum() - torch.diagonal(c).pow(2).sum()
    return on_diag + LAMBD * off_diag


def _grads(layer, loss):
    layer.zero_grad()
    loss.backward()
    out = {}
    for name, p in layer.named_parameters():  # DDP: average the gradients over the processes
        g = p.grad.clone()
        dist.all_reduce(g)
        out[name] = g / WORLD
    return float(loss), out


def _worker(rank: int, store: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)
    x1, x2, layer = _data()
    part = slice(rank * N // WORLD, (rank + 1) * N // WORLD)
    z = lambda x: layer(x[part])  # noqa: E731
    results = {
        "official": _grads(layer, _official_loss(z(x1), z(x2), N)),
        "exact": _grads(layer, barlow_twins_loss(z(x1), z(x2), LAMBD)),
        "official_mode": _grads(layer, scale_gradient(barlow_twins_loss(z(x1), z(x2), LAMBD), 1 / WORLD)),
    }
    torch.save(results, f"{out}/{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bt")
    ctx = mp.start_processes(
        _worker, args=(str(tmp / "store"), str(tmp)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 240
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("gloo processes did not finish")
    return [torch.load(tmp / f"{r}.pt") for r in range(WORLD)]


def test_official_barlow_twins_gradient_is_exact_over_w(results):
    x1, x2, layer = _data()
    single = barlow_twins_loss(layer(x1), layer(x2), LAMBD)  # one process holding the whole batch
    layer.zero_grad()
    single.backward()
    exact = {name: p.grad for name, p in layer.named_parameters()}
    for r in results:
        for kind in ("official", "exact", "official_mode"):
            assert r[kind][0] == pytest.approx(float(single.detach()), rel=1e-5)  # the same loss value everywhere
        for name, g in exact.items():
            torch.testing.assert_close(r["exact"][1][name], g, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(r["official"][1][name], g / WORLD, rtol=1e-4, atol=1e-6)
            torch.testing.assert_close(r["official_mode"][1][name], r["official"][1][name], rtol=1e-4, atol=1e-6)


def test_official_mode_in_the_model_scales_only_the_barlow_twins_gradient():
    """One process: barlow_official_gpus=W divides the Barlow Twins gradient by W; the loss and the rotation
    term's gradient are unchanged."""
    torch.manual_seed(0)
    cfg = load_config("mnist5k-ebarlow")
    x1, x2 = torch.randn(16, 1, 28, 28), torch.randn(16, 1, 28, 28)
    xg, g = torch.randn(64, 1, 14, 14), torch.randint(4, (64,))
    grads = {}
    for w in (0, 4):
        torch.manual_seed(1)
        model = ESSLModel(load_config("mnist5k-ebarlow", [f"barlow_official_gpus={w}"]), 1)
        out = model(x1, x2, [(xg, g)])
        model.projector.zero_grad()
        out["ssl_loss"].backward(retain_graph=True)
        ssl = {n: p.grad.clone() for n, p in model.projector.named_parameters()}
        model.zero_grad()
        out["pred_loss/rotation"].backward()
        pred = {n: p.grad.clone() for n, p in model.heads.named_parameters()}
        grads[w] = (float(out["loss"].detach()), ssl, pred)
    assert grads[4][0] == grads[0][0] and cfg.barlow_official_gpus == 0
    for n, v in grads[0][1].items():
        torch.testing.assert_close(grads[4][1][n], v / 4)
    for n, v in grads[0][2].items():
        assert torch.equal(grads[4][2][n], v)
