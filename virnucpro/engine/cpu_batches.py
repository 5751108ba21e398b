"""CPU workers run several batches at once, each on one torch thread.

On the CPU a worker's cores are used as single-threaded batches side by side rather than as
threads inside one batch: every operation of the forward (attention, GELU, layer norm, not only
the matrix products) then runs in parallel, with no synchronisation between threads inside an
operator, which takes less time on both models (docs/performance.md). Each batch is computed
by one thread whatever the number of cores or workers, so the numbers do not depend on either. Memory grows little: the CPU forward already
runs in cache-sized row groups (``embeddings.batching.cpu_token_cap``), per thread.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def batches_side_by_side(device: str, cores: int | None = None) -> Iterator[int]:
    """Yield how many batches to run at once on ``device``; on the CPU, torch uses one thread per batch inside.

    ``cores``: the CPU cores this worker may use (default: torch's thread count, i.e. the
    machine's cores or ``OMP_NUM_THREADS``). On a GPU: one batch at a time, nothing changed.
    Torch's thread setting is restored on exit.
    """
    if device != "cpu":
        yield 1
        return
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # also the default of the threads that run the batches (torch inits each lazily)
    try:
        yield max(1, cores or previous)
    finally:
        torch.set_num_threads(previous)
