"""Token-budget batching shared by the ESM-2 and DNA embedders."""

from __future__ import annotations

from collections.abc import Sequence


def token_budget_batches(
    shapes: Sequence[tuple[int, int]], sort_keys: Sequence[int], token_budget: int
) -> list[list[int]]:
    """Length-sorted batches of at most ``token_budget`` padded tokens.

    ``shapes[i] = (rows, row_tokens)``: sequence ``i`` occupies ``rows`` rows of ``row_tokens``
    tokens (one row unless it is split into windows). A batch costs ``max row_tokens * total rows``.
    Sequences are taken in order of ``(sort_keys[i], i)``; a sequence that does not fit closes the
    current batch (fair-esm's rule), so one bigger than the budget ends up alone.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    rows_in_batch = widest = 0
    for index in sorted(range(len(shapes)), key=lambda i: (sort_keys[i], i)):
        rows, row_tokens = shapes[index]
        if current and max(widest, row_tokens) * (rows_in_batch + rows) > token_budget:
            batches.append(current)
            current, rows_in_batch, widest = [], 0, 0
        current.append(index)
        rows_in_batch += rows
        widest = max(widest, row_tokens)
    if current:
        batches.append(current)
    return batches


# On the CPU a batch runs fastest when its largest activation (tokens x widest layer) stays in
# the last-level cache; bigger engine batches are cut into consecutive row groups of this size.
CPU_ACTIVATION_BYTES = 8 << 20


def cpu_token_cap(widest_features: int, bytes_per_value: int = 4) -> int:
    """Tokens per CPU sub-batch so that ``tokens x widest_features`` values fit CPU_ACTIVATION_BYTES."""
    return max(256, CPU_ACTIVATION_BYTES // (bytes_per_value * max(1, widest_features)))


def row_groups(row_tokens: Sequence[int], cap: int) -> list[range]:
    """Consecutive rows in groups whose padded cost (widest row x rows) stays within ``cap``.

    A row wider than ``cap`` gets a group of its own; every row is in exactly one group, in order.
    """
    groups: list[range] = []
    start = widest = 0
    for index, tokens in enumerate(row_tokens):
        if index > start and max(widest, tokens) * (index - start + 1) > cap:
            groups.append(range(start, index))
            start, widest = index, 0
        widest = max(widest, tokens)
    if row_tokens:
        groups.append(range(start, len(row_tokens)))
    return groups
