"""Work items: one per input file, ordered largest first (by residues, a proxy for tokens).

Each file is embedded by exactly one worker, so its output never depends on how many workers
there are. Idle workers take the next item from the front of one shared, largest-first list
(longest-processing-time-first scheduling): the big files start early and the small ones
fill the gaps at the end, so no worker idles while another has a backlog.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from virnucpro.contracts import EMBEDDING_SUFFIX
from virnucpro.errors import InputError, raise_interruption_behind
from virnucpro.seqio import COMPRESSION_SUFFIXES, compression_of, is_stream

_BOUNDARY_TOKENS = 2  # BOS/CLS and EOS/SEP: what every sequence costs besides its residues


@dataclass
class WorkItem:
    """One input file to embed into ``out_path``."""

    index: int  # position on the command line (failure lines and outputs keep this order)
    path: str  # as given by the caller
    out_path: Path
    cost: int  # residues + boundary tokens: the scheduling weight
    deaths: int = 0  # workers that died while holding this item


def output_stem(path: str) -> str:
    """``dir/shard_00001.faa`` -> ``shard_00001``; ``x.fa.gz`` (or .bz2, .xz) -> ``x``."""
    name = Path(path).name
    for suffix in COMPRESSION_SUFFIXES:
        name = name.removesuffix(suffix)
    stem = Path(name).stem
    return stem or name


def estimate_cost(path: str) -> int:
    """Residues plus boundary tokens of a plain FASTA file; 0 when unreadable, compressed or a stream (all fail at once)."""
    try:
        if is_stream(path) or compression_of(path) is not None:
            return 0
        residues = records = 0
        with open(path, "rb") as handle:
            for line in handle:
                if line.startswith(b">"):
                    records += 1
                else:
                    residues += len(line.strip())
    except (OSError, EOFError, ValueError) as error:
        raise_interruption_behind(error)
        return 0
    return residues + _BOUNDARY_TOKENS * records


def plan_items(files: Sequence[str], outdir: Path) -> list[WorkItem]:
    """Items for ``files``, largest first (ties keep command-line order); refuses output clashes."""
    seen: dict[str, str] = {}
    items = []
    for index, path in enumerate(files):
        stem = output_stem(path)
        if stem in seen:
            raise InputError(f"{path}: same output name {stem}{EMBEDDING_SUFFIX} as {seen[stem]}; rename one of them")
        seen[stem] = path
        items.append(WorkItem(index, path, outdir / f"{stem}{EMBEDDING_SUFFIX}", estimate_cost(path)))
    return sorted(items, key=lambda item: (-item.cost, item.index))
