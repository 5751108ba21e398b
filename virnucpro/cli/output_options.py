"""Options of what users take away (pairs, thresholds, regions, extracted sequences), defined once
for ``prepare``, ``classify`` and ``predict``; they reach a command as one :class:`OutputChoices`
(see :func:`virnucpro.cli.options.option_group`). Nothing heavy is imported here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from virnucpro.cli.options import finite, option, option_group
from virnucpro.contracts import PAIR_RULES, PAIRINGS
from virnucpro.regions import DEFAULT_MAX_GAP, DEFAULT_MIN_CHUNKS, RegionRule

if TYPE_CHECKING:
    from virnucpro.classify import CallRule

F = Callable[..., Any]


def _extract(_ctx: click.Context, _param: click.Parameter, value: str) -> tuple[str, ...]:
    from virnucpro.errors import InputError
    from virnucpro.extract import parse_extract

    try:
        return parse_extract(value)
    except InputError as error:
        raise click.BadParameter(str(error).split(": ", 1)[1]) from None


@dataclass(frozen=True)
class OutputChoices:
    """``--min-p-virus``, ``--pair-rule``, ``--region-max-gap``, ``--region-min-chunks``,
    ``--extract`` (and ``--pairing`` where the command reads the inputs), as the library takes them."""

    extract: tuple[str, ...]
    pair_rule: str
    min_p_virus: float | None
    region_max_gap: int
    region_min_chunks: int
    pairing: str = "auto"

    @property
    def regions(self) -> RegionRule:
        return RegionRule(self.region_max_gap, self.region_min_chunks)

    def call_rule(self, virus_fraction: float) -> "CallRule":
        from virnucpro.classify import CallRule  # torch: imported when a command runs, not at start-up

        return CallRule(virus_fraction, self.min_p_virus, self.pair_rule)


_PAIRING = option(
    "--pairing",
    type=click.Choice(PAIRINGS),
    default="auto",
    show_default=True,
    help="Mate files of paired-end reads: auto = two adjacent FASTQ inputs whose records pair up by id "
    "(the same id, or /1 and /2); paired = the inputs are mate files in order (R1 R2 [R1 R2 ...]); none.",
)

_CALL_OPTIONS = dict(
    min_p_virus=option(
        "--min-p-virus",
        type=click.FloatRange(min=0.0, max=1.0, min_open=True),
        callback=finite,
        default=None,
        help="Call a chunk virus when its highest P(virus) is at least this [default: the reference's rule, "
        "highest P(virus) >= highest P(others)].",
    ),
    pair_rule=option(
        "--pair-rule",
        type=click.Choice(PAIR_RULES),
        default="any",
        show_default=True,
        help="A read pair is virus when any mate is, or both are (the pair_call column; --extract keeps pairs whole).",
    ),
    region_max_gap=option(
        "--region-max-gap",
        type=click.IntRange(min=0),
        default=DEFAULT_MAX_GAP,
        show_default=True,
        help="Chunks not called virus allowed inside a viral region (viral_regions.tsv).",
    ),
    region_min_chunks=option(
        "--region-min-chunks",
        type=click.IntRange(min=1),
        default=DEFAULT_MIN_CHUNKS,
        show_default=True,
        help="Virus chunks a viral region needs.",
    ),
    extract=option(
        "--extract",
        default="virus",
        show_default=True,
        callback=_extract,
        help="Calls whose input records are copied to viral/<input stem>.<label>.fa.gz|.fq.gz (label: viral for "
        "virus, else the call), comma-separated (virus, others, no_coding_frame, failed), or none.",
    ),
)

pairing_option = option_group("pairing", lambda pairing: pairing, pairing=_PAIRING)
"""``--pairing`` alone (``prepare``), passed as the string it is."""


def output_options(pairing: bool = True) -> Callable[[F], F]:
    """The options above as one ``outputs`` argument (an :class:`OutputChoices`); ``--pairing`` too
    where the command reads the inputs."""
    options = {"pairing": _PAIRING, **_CALL_OPTIONS} if pairing else _CALL_OPTIONS
    return option_group("outputs", OutputChoices, **options)
