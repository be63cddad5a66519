"""SIGTERM during training: finish the current step, write a checkpoint there, and stop cleanly.

SLURM sends SIGTERM before it preempts or times out a job (``#SBATCH --signal=TERM@120`` gives 120 s), and
torchrun forwards it to its workers. While step checkpoints are on (``checkpoint_every`` > 0) the training loop
installs :func:`sigterm_flag`; the loop looks at the flag after every step (with several processes, at the sync
points every ``log_every`` steps, where the ranks agree on it), saves, and raises
:class:`essl.errors.Preempted`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class SigtermFlag:
    is_set: bool = False


@contextmanager
def sigterm_flag(enabled: bool) -> Iterator[SigtermFlag]:
    """A flag that SIGTERM sets while the block runs (instead of ending the process); the previous handler is
    restored afterwards. Disabled (never set) unless ``enabled`` and in the main thread."""
    flag = SigtermFlag()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum, frame):
        flag.is_set = True

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGTERM, previous)
