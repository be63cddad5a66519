"""Multi-process training: 2 gloo processes on the CPU give the single-process maths on the whole batch.

- exact epochs: the global batches do not depend on the number of processes;
- every objective (info_nce, nt_xent, SimSiam, Barlow Twins, BYOL, VICReg, MoCo v3, the E-SSL prediction term)
  and the whole ESSLModel under DDP: the same loss and, after DDP's averaging, the same gradients as one process
  with the whole batch (2 processes started with ``torch.multiprocessing``);
- ``torchrun --standalone --nproc_per_node=2 -m essl pretrain`` end to end, and checkpoints that move between
  2 processes and 1 in both directions.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from essl.errors import EsslError
from essl.data.batches import TensorBatches
from essl.objectives import (
    all_reduce_sum,
    barlow_twins_loss,
    byol_loss,
    gather,
    info_nce,
    mocov3_loss,
    nt_xent,
    prediction_loss,
    simsiam_loss,
    vicreg_loss,
)
from essl.runs import load_checkpoint, read_metrics, save_checkpoint
from essl.training.config import config_from_dict, load_config
from essl.training.distributed import detect_env
from essl.training.pretrain import pretrain

pytestmark = [
    pytest.mark.distributed,
    pytest.mark.slow,
    pytest.mark.skipif(
        not (dist.is_available() and dist.is_gloo_available()),
        reason="torch.distributed with the gloo backend is not available",
    ),
]

WORLD = 2
N = 8  # global batch of the maths tests
D = 6  # input width; embeddings are 5-d
TIMEOUT = 240  # seconds for any multi-process launch (a busy 2-core machine is slow)
LAUNCH_ENV_KEYS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RUN_ID",
    "GROUP_RANK",
    "ROLE_RANK",
)


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_KEYS and not k.startswith("SLURM_")}
    env["OMP_NUM_THREADS"] = "1"
    return env


# ------------------------------------------------------------------------------------------ exact epochs
@pytest.mark.parametrize("world", [2, 4])
def test_global_batches_do_not_depend_on_process_count(world):
    images = torch.arange(40 * 3, dtype=torch.uint8).reshape(40, 3, 1, 1)
    single = TensorBatches(images, 8, seed=3)
    shards = [TensorBatches(images, 8, seed=3, rank=r, world_size=world) for r in range(world)]
    assert len(single) == 5 and all(len(s) == 5 for s in shards)
    for epoch in (0, 1):
        ones = list(single.epoch(epoch))
        parts = [list(s.epoch(epoch)) for s in shards]
        for step, batch in enumerate(ones):
            assert torch.equal(torch.cat([p[step] for p in parts]), batch)
        resumed = [list(s.epoch(epoch, start_step=3)) for s in shards]
        assert all(torch.equal(a, b) for r in range(world) for a, b in zip(resumed[r], parts[r][3:]))
    assert not torch.equal(torch.cat(list(single.epoch(0))), torch.cat(list(single.epoch(1))))


def test_batch_must_divide_over_processes():
    with pytest.raises(EsslError, match="divisible"):
        TensorBatches(torch.zeros(20, 1, 2, 2, dtype=torch.uint8), 6, seed=0, rank=0, world_size=4)


# ---------------------------------------------------------------------------------------- launch detection
def test_detect_env_torchrun_and_slurm(monkeypatch):
    for key in LAUNCH_ENV_KEYS + ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(key, raising=False)
    assert detect_env().world_size == 1
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "1")
    env = detect_env()
    assert (env.rank, env.world_size, env.local_rank, env.is_main) == (3, 8, 1, False)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key)

    # sbatch script itself (SLURM_NTASKS set, no srun step): one process
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    assert detect_env().world_size == 1
    # srun step of 8 tasks without MASTER_ADDR: a clear error rather than 8 independent runs
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    with pytest.raises(EsslError, match="MASTER_ADDR"):
        detect_env()
    monkeypatch.setenv("MASTER_ADDR", "node001")
    env = detect_env()
    assert (env.rank, env.world_size, env.local_rank) == (5, 8, 1)
    assert os.environ["RANK"] == "5" and os.environ["WORLD_SIZE"] == "8" and os.environ["MASTER_PORT"] == "29500"


# ------------------------------------------------------------------------------- spawning gloo processes
def _spawn(fn, *args, nprocs: int = WORLD) -> None:
    """Run ``fn(rank, *args)`` in ``nprocs`` fresh processes; fail (not hang) after TIMEOUT seconds."""
    ctx = mp.start_processes(fn, args=args, nprocs=nprocs, join=False, start_method="spawn")
    deadline = time.monotonic() + TIMEOUT
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                if p.is_alive():
                    p.kill()
            pytest.fail(f"{nprocs} gloo processes did not finish within {TIMEOUT} s")


def _init(rank: int, store: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=WORLD)


# ------------------------------------------------------------------------------ the objectives, one by one
def _loss_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "x1": torch.randn(N, D, generator=g),
        "x2": torch.randn(N, D, generator=g),
        "xg": torch.randn(4 * N, D, generator=g),
        "labels": torch.randint(4, (4 * N,), generator=g),
    }


def _loss_modules() -> nn.ModuleDict:
    torch.manual_seed(1)
    return nn.ModuleDict({"encoder": nn.Linear(D, 5), "predictor": nn.Linear(5, 5), "head": nn.Linear(D, 4)})


def _objective(name: str, mods: nn.ModuleDict, x: dict[str, torch.Tensor]):
    """The loss of ``name`` on (a slice of) the batch, and the embeddings whose gradients are compared."""
    z1, z2 = mods["encoder"](x["x1"]), mods["encoder"](x["x2"])
    if name == "prediction":
        logits = mods["head"](x["xg"])
        logits.retain_grad()
        return prediction_loss(logits, x["labels"])[0], [logits]
    z1.retain_grad()
    z2.retain_grad()
    if name == "info_nce":
        return info_nce(z1, z2, 0.2), [z1, z2]
    if name == "nt_xent":
        return nt_xent(z1, z2, 0.1), [z1, z2]
    if name == "barlow_twins":
        return barlow_twins_loss(z1, z2, 0.0051), [z1, z2]
    if name == "vicreg":
        return vicreg_loss(z1, z2), [z1, z2]
    p1, p2 = mods["predictor"](z1), mods["predictor"](z2)
    p1.retain_grad()
    p2.retain_grad()
    if name == "byol":  # the targets: the encoder's (detached) embeddings stand in for a momentum network's
        return byol_loss(p1, p2, z1.detach(), z2.detach()), [p1, p2]
    if name == "mocov3":  # keys of the global batch gathered from both ranks
        return mocov3_loss(p1, p2, z1.detach(), z2.detach(), 0.2), [p1, p2]
    return simsiam_loss(p1, p2, z1, z2), [p1, p2]


OBJECTIVES = ["info_nce", "nt_xent", "simsiam", "barlow_twins", "prediction", "byol", "vicreg", "mocov3"]


def _local(x: dict[str, torch.Tensor], rank: int) -> dict[str, torch.Tensor]:
    """Rank ``rank``'s contiguous slice of every tensor (the prediction rows too: their loss is per-sample)."""
    return {k: v.chunk(WORLD)[rank] for k, v in x.items()}


def _losses_on_rank(rank: int) -> dict:
    results = {}
    x = _local(_loss_inputs(), rank)
    for name in OBJECTIVES:
        mods = _loss_modules()
        loss, emb = _objective(name, mods, x)
        loss.backward()
        grads = {}
        for pname, p in mods.named_parameters():
            if p.grad is not None:  # what DDP does: the mean of the ranks' gradients
                dist.all_reduce(p.grad)
                grads[pname] = p.grad / WORLD
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        results[name] = {"loss": mean_loss / WORLD, "params": grads, "emb": [e.grad for e in emb]}
    return results


@pytest.mark.parametrize("name", OBJECTIVES)
def test_objective_matches_single_process(name, two_process_results):
    """Loss: the mean over ranks of the local losses (what is logged) equals the whole-batch loss. Gradients:
    rank r's gradient with respect to its own embeddings is WORLD × the whole-batch gradient of its slice
    (gathers and all-reduces sum the other ranks' contributions back), so that DDP's mean over ranks of the
    parameter gradients is the whole-batch parameter gradient; both are checked."""
    mods = _loss_modules()
    loss, emb = _objective(name, mods, _loss_inputs())
    loss.backward()
    two_process_losses = [r["losses"] for r in two_process_results]
    # float32 round-off scales with the largest gradient; entries that are zero in exact arithmetic (the encoder
    # bias under Barlow Twins' batch standardisation) come out as noise of that order, in either computation
    atol = 1e-6 * max(1.0, max(p.grad.abs().max().item() for p in mods.parameters() if p.grad is not None))
    for res in two_process_losses:
        r = res[name]
        torch.testing.assert_close(r["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
        for pname, p in mods.named_parameters():
            if p.grad is None:
                assert pname not in r["params"]
            else:
                torch.testing.assert_close(r["params"][pname], p.grad, rtol=1e-4, atol=atol)
    for i, e in enumerate(emb):
        local = torch.cat([res[name]["emb"][i] for res in two_process_losses]) / WORLD
        torch.testing.assert_close(local, e.grad, rtol=1e-4, atol=1e-7)


def _collectives_on_rank(rank: int) -> dict:
    x = torch.full((2, 3), float(rank + 1), requires_grad=True)
    y = gather(x)  # [[1]*3]*2 + [[2]*3]*2
    w = torch.arange(12.0).reshape(4, 3) * (rank + 1)  # a different weighting on every rank
    (y * w).sum().backward()
    s = all_reduce_sum(x * (rank + 1))
    return {"y": y.detach(), "grad": x.grad.clone(), "s": s.detach()}


def test_gather_and_all_reduce_sum(two_process_results):
    res = [r["collectives"] for r in two_process_results]
    expected = torch.cat([torch.ones(2, 3), 2 * torch.ones(2, 3)])
    w_sum = torch.arange(12.0).reshape(4, 3) * 3  # sum over ranks of the weightings
    for r in range(WORLD):
        assert torch.equal(res[r]["y"], expected)
        assert torch.equal(res[r]["grad"], w_sum[2 * r : 2 * r + 2])  # the summed gradient of its own slice
        assert torch.equal(res[r]["s"], torch.full((2, 3), 1.0 * 1 + 2.0 * 2))


# -------------------------------------------------------------------------------- the whole model, in DDP
MODEL_CASES = {
    "simclr": {"method": "simclr", "temperature": 0.2},
    "simclr_nt_xent": {"method": "simclr", "temperature": 0.1, "full_nt_xent": True},
    "simsiam": {"method": "simsiam", "predictor_hidden": 32},
    "barlow_twins": {"method": "barlow_twins"},
    "byol": {"method": "byol", "predictor_hidden": 32},  # momentum target network (forward only)
    "vicreg": {"method": "vicreg"},
    "mocov3": {"method": "mocov3", "predictor_hidden": 32, "temperature": 0.2},
}


def _model(case: str):
    from essl.training.model import ESSLModel

    cfg = config_from_dict(
        {
            **MODEL_CASES[case],
            "backbone": "small_cnn",
            "projector": "small",
            "equivariance": [{"group": "rotation", "weight": 0.4, "view": "mnist_small", "head": "small"}],
        }
    )
    torch.manual_seed(2)
    model = ESSLModel(cfg, in_channels=1)
    return model


def _bn_eval(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _model_inputs():
    g = torch.Generator().manual_seed(4)
    return (
        torch.randn(N, 1, 12, 12, generator=g),
        torch.randn(N, 1, 12, 12, generator=g),
        torch.randn(N, 1, 8, 8, generator=g),
    )


def _model_forward(model, x1, x2, small):
    from essl.groups import make_group

    xg, g = make_group("rotation").orbit(small)  # every rank builds the orbit of its own crops
    return model(x1, x2, [(xg, g)])


def _models_on_rank(rank: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    results = {}
    x1, x2, small = (t.chunk(WORLD)[rank] for t in _model_inputs())
    for case in MODEL_CASES:
        model = _model(case)
        net = DistributedDataParallel(model)
        net.train()
        _bn_eval(net)
        out = _model_forward(net, x1, x2, small)
        out["loss"].backward()
        losses = torch.stack([out["loss"].detach(), out["ssl_loss"].detach(), out["pred_loss/rotation"].detach()])
        dist.all_reduce(losses)
        results[case] = {
            "losses": losses / WORLD,
            "grads": {k: p.grad.clone() for k, p in model.named_parameters() if p.grad is not None},
        }
    return results


def _worker(rank: int, store: str, out: str) -> None:
    """One pair of gloo processes computes everything the maths tests compare (spawning costs seconds)."""
    _init(rank, store)
    try:
        results = {
            "losses": _losses_on_rank(rank),
            "collectives": _collectives_on_rank(rank),
            "models": _models_on_rank(rank),
        }
        torch.save(results, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gloo")
    _spawn(_worker, str(tmp / "store"), str(tmp))
    return [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.mark.parametrize("case", list(MODEL_CASES))
def test_ddp_model_matches_single_process(case, two_process_results):
    """The whole ESSLModel (small CNN, projector, predictor, rotation head; λ = 0.4) in DDP with 2 processes:
    the mean loss and DDP's averaged parameter gradients equal one process on the whole batch.

    The BatchNorm layers of the backbone, projector and predictor are put in **eval mode** here: on a CPU there is
    no SyncBatchNorm, so in train mode each rank would normalise with the statistics of its own half of the
    batch, which legitimately differ from the whole-batch statistics (on CUDA the trainer converts to
    SyncBatchNorm). Everything else (gathered InfoNCE / NT-Xent, all-reduced Barlow Twins statistics, per-sample
    SimSiam and cross-entropy terms, DDP's gradient averaging) is exact.
    """
    model = _model(case)
    model.train()
    _bn_eval(model)
    out = _model_forward(model, *_model_inputs())
    out["loss"].backward()
    expected = torch.stack([out["loss"].detach(), out["ssl_loss"].detach(), out["pred_loss/rotation"].detach()])
    grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}  # not the frozen target
    for res in two_process_results:
        r = res["models"][case]
        torch.testing.assert_close(r["losses"], expected, rtol=1e-5, atol=1e-6)
        assert r["grads"].keys() == grads.keys()
        for k, gr in grads.items():  # float32 sums in another order: tolerance relative to the largest entry
            torch.testing.assert_close(
                r["grads"][k], gr, rtol=1e-4, atol=1e-5 * (1 + gr.abs().max().item()), msg=lambda m, k=k: f"{k}: {m}"
            )


# ------------------------------------------------------------------------------- torchrun end to end
TINY = ["subset=256", "batch_size=64", "knn_every=1", "warmup_epochs=0", "precision=fp32"]


def _torchrun(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={WORLD}",
        "-m",
        "essl",
        "pretrain",
        *args,
        "--no-progress",
    ]
    res = subprocess.run(cmd, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=TIMEOUT)
    assert res.returncode == 0, f"torchrun failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-6000:]}"
    return res


def _extend(run: Path, epochs: int) -> None:
    """Make a finished run look like a longer run stopped after its last epoch (as a preempted job would be)."""
    ckpt = load_checkpoint(run / "checkpoint.pt")
    ckpt["config"]["epochs"] = epochs
    save_checkpoint(run / "checkpoint.pt", ckpt)


@pytest.fixture
def single_process_env(monkeypatch):
    for key in LAUNCH_ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    for key in [k for k in os.environ if k.startswith("SLURM_")]:
        monkeypatch.delenv(key)


def test_torchrun_two_processes_then_resume_with_one(tmp_path, single_process_env):
    run = tmp_path / "run"
    logged = ["logger=tensorboard", "log_every=2"] if importlib.util.find_spec("tensorboard") else []
    res = _torchrun(["mnist5k-esimclr", *TINY, "epochs=1", *logged, "--out", str(run)], tmp_path)
    rows = read_metrics(run)
    assert res.stderr.count("essl: data mnist5k: 256 images") == 1  # the start-up summary: first process only
    record = json.loads((run / "run.json").read_text())
    assert record["world_size"] == WORLD and record["status"] == "finished"
    if logged:  # only the first process logs, the means of all processes
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        assert len(list((run / "tensorboard").iterdir())) == 1
        events = EventAccumulator(str(run / "tensorboard"))
        events.Reload()
        loss = [e.value for e in events.Scalars("train/loss")]
        assert len(loss) == 2 and sum(loss) / 2 == pytest.approx(rows[0]["loss"], rel=1e-5)
    assert [r["epoch"] for r in rows] == [1] and rows[0]["step"] == 4  # 256 images / global batch 64
    assert rows[0]["loss"] == pytest.approx(rows[0]["ssl_loss"] + 0.4 * rows[0]["pred_loss/rotation"], rel=1e-4)
    assert 0 <= rows[0]["knn_top1"] <= 100
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["world_size"] == WORLD and ckpt["epoch"] == 1 and ckpt["step"] == 4
    assert not any(k.startswith("module.") for k in ckpt["model"])  # the DDP wrapper is not saved
    assert not list(run.glob(".*tmp*"))  # only rank 0 wrote, atomically

    _extend(run, 2)
    pretrain(None, run, resume=True, progress=False)  # one process
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["step"] == 8
    ckpt2 = load_checkpoint(run / "checkpoint.pt")
    assert ckpt2["world_size"] == 1 and ckpt2["epoch"] == 2
    resumed = json.loads((run / "run.json").read_text())["resumes"]
    assert [(r["world_size"], r["from_epoch"], r["status"]) for r in resumed] == [(1, 1, "finished")]
    assert any(not torch.equal(ckpt["model"][k], ckpt2["model"][k]) for k in ckpt["model"])


def test_one_process_checkpoint_resumes_with_torchrun(tmp_path, single_process_env):
    run = pretrain(load_config("mnist5k-ebarlow", TINY + ["epochs=1", "knn_every=0"]), tmp_path / "run", progress=False)
    assert load_checkpoint(run / "checkpoint.pt")["world_size"] == 1
    _extend(run, 2)
    _torchrun(["--resume", str(run)], tmp_path)
    rows = read_metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2]
    ckpt = load_checkpoint(run / "checkpoint.pt")
    assert ckpt["world_size"] == WORLD and ckpt["epoch"] == 2 and ckpt["step"] == 8
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())
