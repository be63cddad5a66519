"""Process-group setup for torchrun and SLURM, and small helpers that are no-ops in a single process.

Launchers (docs/distributed.md):

- ``torchrun`` (one node or several) sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and
  ``MASTER_PORT``; nothing else is needed.
- ``srun`` (SLURM, one task per GPU) sets ``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS`` and ``SLURM_LOCALID``; the
  job script exports ``MASTER_ADDR`` (the first node of the job) and optionally ``MASTER_PORT`` (default 29500).
  Only an ``srun`` job step counts: a plain ``python -m essl`` in the batch script (``SLURM_NTASKS`` set, no
  step) is one process.
"""

from __future__ import annotations

import os
import zlib
from dataclasses import dataclass

import torch
import torch.distributed as dist

from essl.errors import EsslError

DEFAULT_PORT = "29500"


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def detect_env() -> DistEnv:
    """Rank/world size from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or from an srun job step (SLURM_PROCID,
    SLURM_STEP_NUM_TASKS, SLURM_LOCALID; MASTER_ADDR must then be exported by the job script)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    world = int(env.get("SLURM_STEP_NUM_TASKS", "1"))
    if "SLURM_PROCID" in env and world > 1:
        if "MASTER_ADDR" not in env:
            raise EsslError(
                f"This is task {env['SLURM_PROCID']} of an srun step with {world} tasks, but MASTER_ADDR is not set. "
                "Export it in the job script before srun, e.g. "
                '`export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)` '
                "(docs/distributed.md has a full sbatch example)."
            )
        rank = int(env["SLURM_PROCID"])
        env.setdefault("RANK", str(rank))
        env.setdefault("WORLD_SIZE", str(world))
        env.setdefault("LOCAL_RANK", env.get("SLURM_LOCALID", "0"))
        env.setdefault("MASTER_PORT", DEFAULT_PORT)
        return DistEnv(rank, world, int(env.get("SLURM_LOCALID", 0)))
    return DistEnv()


def cuda_index(denv: DistEnv) -> int:
    """The CUDA device of this process: its local rank, or device 0 where the launcher already restricted
    ``CUDA_VISIBLE_DEVICES`` to one GPU per task (e.g. ``srun --gpus-per-task=1``)."""
    count = torch.cuda.device_count()
    return denv.local_rank % count if count else 0


def init_distributed(device_type: str) -> DistEnv:
    """Initialise the default process group when launched with several processes (NCCL on CUDA, gloo on CPU)."""
    denv = detect_env()
    if denv.enabled and not dist.is_initialized():
        if not dist.is_available():
            raise EsslError("Several processes were launched but this torch build has no torch.distributed.")
        if device_type == "cuda":
            torch.cuda.set_device(cuda_index(denv))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=denv.rank, world_size=denv.world_size)
    return denv


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (for logging)."""
    if not is_initialized() or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))


def any_rank(device: torch.device, *flags: bool) -> list[bool]:
    """For each flag, whether it is true on any rank (one small all-reduce; the flags themselves otherwise)."""
    if not is_initialized():
        return [bool(f) for f in flags]
    t = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def all_gather_objects(obj: object) -> list:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in a single process."""
    if not is_initialized():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def check_same_on_all_ranks(what: str, text: str, device: torch.device) -> None:
    """Raise on every rank if ``text`` (e.g. the list of training files) differs between ranks: exact epochs
    need the same dataset, in the same order, everywhere."""
    if not is_initialized():
        return
    digest = zlib.crc32(text.encode()) & 0x7FFFFFFF
    t = torch.tensor([digest, -digest], dtype=torch.int64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    if t[0].item() != -t[1].item():
        raise EsslError(
            f"The processes see different {what} (rank {dist.get_rank()} differs from another rank). "
            f"Every node must read the same data at the same path."
        )
