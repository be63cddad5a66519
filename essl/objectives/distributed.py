"""Differentiable collectives so that every loss sees the global batch (identity in a single process).

- :func:`gather` concatenates a tensor from all ranks along dim 0. Backward sums the incoming gradients over
  ranks (all-reduce) and returns this rank's slice, so that, after DDP averages parameter gradients over
  ranks, the gradient equals that of the single-process loss on the whole batch.
- :func:`all_reduce_sum` sums a tensor over ranks; backward is again an all-reduce sum, for the same reason.

The torch built-in ``torch.distributed.nn.functional.all_gather`` is deprecated (torch 2.13), hence these two
small autograd functions.
"""

from __future__ import annotations

import torch
import torch.distributed as dist


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


class _Gather(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        ctx.n = x.shape[0]
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = dist.get_rank() * ctx.n
        return grad[start : start + ctx.n]


class _AllReduceSum(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def gather(x: torch.Tensor) -> torch.Tensor:
    """All ranks' ``x`` concatenated along dim 0 (equal shapes on every rank), with gradients."""
    return _Gather.apply(x) if world_size() > 1 else x


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over ranks, with gradients."""
    return _AllReduceSum.apply(x) if world_size() > 1 else x
