"""How many tickets a training step can hold on this device: the recipe's batch when it fits, else the largest
that does with gradient accumulation making up the rest (same effective batch, same schedule)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BatchPlan:
    """Per-step tickets on the device and how many steps accumulate into one optimiser update."""

    per_device: int
    accumulation: int

    @property
    def effective(self) -> int:
        return self.per_device * self.accumulation


def is_out_of_memory(exc: BaseException) -> bool:
    """A device allocation failure (CUDA's own error type, or the RuntimeError older torch raised)."""
    import torch

    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(exc, oom)) or "out of memory" in str(exc).lower()


def plan_batch(want: int, try_step: Callable[[int], None], device: str) -> BatchPlan:
    """Probe `try_step(n)` (one forward + backward of n of the widest tickets) from `want` down by halves until it
    fits; on a CPU (no device memory to run out of) the recipe's batch as it is."""
    if not device.startswith("cuda"):
        return BatchPlan(want, 1)
    import torch

    n = want
    while True:
        try:
            try_step(n)
            break
        except (RuntimeError, MemoryError) as exc:
            if not is_out_of_memory(exc) or n == 1:
                raise
            log.info("a training step of %d tickets does not fit; trying %d", n, n // 2)
            n //= 2
        finally:
            torch.cuda.empty_cache()
    return BatchPlan(n, math.ceil(want / n))
