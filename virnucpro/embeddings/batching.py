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
