"""Process-group setup for torchrun and SLURM, and small helpers that are no-ops in a single process."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


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
    """Rank/world size from torchrun (RANK, WORLD_SIZE, LOCAL_RANK) or SLURM (SLURM_PROCID, SLURM_NTASKS,
    SLURM_LOCALID; MASTER_ADDR/MASTER_PORT must then be set by the job script)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    if "SLURM_PROCID" in env and int(env.get("SLURM_NTASKS", "1")) > 1 and "MASTER_ADDR" in env:
        rank, world = int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"])
        env.setdefault("RANK", str(rank))
        env.setdefault("WORLD_SIZE", str(world))
        env.setdefault("MASTER_PORT", "29500")
        return DistEnv(rank, world, int(env.get("SLURM_LOCALID", 0)))
    return DistEnv()


def init_distributed(device_type: str) -> DistEnv:
    """Initialise the default process group when launched with several processes (NCCL on CUDA, gloo on CPU)."""
    denv = detect_env()
    if denv.enabled and not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(denv.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=denv.rank,
                                world_size=denv.world_size)
    return denv


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_mean(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average a dict of floats over ranks (for logging)."""
    if not (dist.is_available() and dist.is_initialized()) or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(keys, t.tolist()))
