"""Online linear probe: a linear classifier trained alongside pretraining, to see a run learn while it trains.

As in the official ImageNet scripts (rdangovs/essl ``imagenet/simclr/main.py``: ``online_head`` on
``r1.detach()``), the classifier reads the *detached* backbone features of the first SSL view, so it cannot change
the backbone's or the projector's gradients. Unlike there, it has its own optimizer (SGD, momentum 0.9, constant
lr 0.1, no weight decay) instead of sharing the pretraining LARS, so that neither its parameters nor its loss
enter the pretraining optimizer, schedule or loss. Its initial weights come from their own seeded generator, so
turning the probe on or off leaves every random stream of the run (and so its weights) unchanged.

Reported per epoch: ``online_probe_top1``, the training accuracy over the epoch's augmented first views (all
processes together); at the kNN interval, ``online_probe_val_top1`` on the monitor's test/val features.
Under several processes the gradients are averaged over processes, so every copy stays the same.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

LR, MOMENTUM = 0.1, 0.9


class OnlineProbe:
    """Linear head + its SGD optimizer + the epoch's hit counters."""

    def __init__(self, dim: int, classes: int, device: torch.device, seed: int = 0):
        with torch.random.fork_rng(devices=[]):  # its initialisation must not move the run's random stream
            torch.manual_seed(seed + 1_000_003)
            self.head = nn.Linear(dim, classes)
        self.head.to(device)
        self.optimizer = torch.optim.SGD(self.head.parameters(), lr=LR, momentum=MOMENTUM)
        self.device = device
        self._hits = torch.zeros((), dtype=torch.long, device=device)
        self._seen = 0

    def step(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """One SGD step on (detached) ``features`` of this process's slice of the batch."""
        logits = self.head(features.detach().float())
        loss = F.cross_entropy(logits, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if dist.is_available() and dist.is_initialized():
            for p in self.head.parameters():
                grad = p.grad
                assert grad is not None  # every head parameter takes part in the loss
                dist.all_reduce(grad)
                grad /= dist.get_world_size()
        self.optimizer.step()
        self._hits += (logits.detach().argmax(1) == labels).sum()
        self._seen += len(labels)

    def counts(self) -> tuple[torch.Tensor, int]:
        """This process's (hits, seen) since the epoch began (hits stays on the device: no sync)."""
        return self._hits.clone(), self._seen

    def epoch_top1(self) -> float | None:
        """Training top-1 (%) since the last call, over all processes; resets the counters."""
        counts = torch.stack(
            [self._hits.double(), torch.tensor(float(self._seen), device=self.device, dtype=torch.float64)]
        )
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(counts)
        self._hits.zero_()
        self._seen = 0
        return None if counts[1] == 0 else 100.0 * (counts[0] / counts[1]).item()

    @torch.no_grad()
    def accuracy(self, features: torch.Tensor, labels: torch.Tensor, chunk: int = 4096) -> float:
        """Top-1 (%) of the head on precomputed (un-augmented) ``features``."""
        hits = 0
        for start in range(0, len(features), chunk):
            logits = self.head(features[start : start + chunk].to(self.device).float())
            hits += (logits.argmax(1).cpu() == labels[start : start + chunk]).sum().item()
        return 100.0 * hits / max(len(features), 1)

    def state_dict(self) -> dict[str, Any]:
        """Head, optimizer and the running epoch's counters (non-zero in a mid-epoch checkpoint)."""
        return {
            "head": self.head.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "hits": self._hits.cpu(),
            "seen": self._seen,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
        if "hits" in state:
            self._hits = state["hits"].to(self.device)
            self._seen = int(state["seen"])


def epoch_labels(batches: Any, labels: torch.Tensor, epoch: int) -> torch.Tensor:
    """``(steps, local_batch)``: the labels of this process's slice at every step of ``epoch`` (the index
    arithmetic of the batch source, :class:`~essl.data.batches.ShardedOrder`)."""
    return labels[batches.rank_indices(epoch)].view(len(batches), batches.local_batch)
