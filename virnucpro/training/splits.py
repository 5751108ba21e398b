"""Train / validation / test splits that do not leak, written out as ``split.tsv``.

Methods (``--split``):

- ``group``: whole groups (the sheet's ``group`` column: a genome or taxon) go to one part;
  each label's groups are shuffled (seeded) and dealt to test, then validation, until each part
  holds its fraction of that label's frames; the rest trains. No group is on two sides.
- ``sequence``: the same with each input sequence as its own group (identical sequences
  count as one), so fragments of one sequence never sit on both sides. ``auto`` (the default)
  is ``group`` when the sheet has groups, else ``sequence``.
- ``date``: sequences dated on or after ``--before`` are the test part (the DeepVirFinder
  convention); validation is the latest of the earlier ones, per label.
- ``random``: the reference's split of frames (fragments of one genome on both sides: optimistic
  test scores; a warning says so).

With ``validation_fraction`` 0 there is no validation part and early stopping watches the test
part, as the reference did (a warning says the test scores are then optimistic).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from virnucpro.atomic import atomic_write_text
from virnucpro.errors import InputError
from virnucpro.log import get_logger
from virnucpro.training.sheet import LABELS

log = get_logger("split")

PARTS = ("train", "validation", "test")
METHODS = ("auto", "group", "sequence", "date", "random")
SPLIT_TSV = "split.tsv"
UNIT_SEQUENCE = "sequence_id"
UNIT_FRAME = "frame_id"


@dataclass(frozen=True)
class SplitOptions:
    """How to split (``--split``, ``--test-fraction``, ``--validation-fraction``, ``--seed``, ``--before``)."""

    method: str = "auto"
    test_fraction: float = 0.1
    validation_fraction: float = 0.1
    seed: int = 42
    before: str = ""  # --split date: YYYY-MM-DD

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"--split {self.method}: unknown (choose {', '.join(METHODS)})")
        fractions = (self.test_fraction, self.validation_fraction)
        if not all(0.0 <= f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
            raise InputError(
                f"--test-fraction {self.test_fraction} and --validation-fraction {self.validation_fraction}: "
                "each in [0, 1) and together below 1 (the rest trains)"
            )
        if self.method == "date" and not self.before:
            raise InputError("--split date needs --before YYYY-MM-DD (test: sequences dated on or after it)")
        if self.method != "date" and self.test_fraction == 0.0:
            raise InputError("--test-fraction 0: nothing would be held out to test on")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SplitRecord:
    """What the split needs to know of one input sequence."""

    id: str
    label: str
    group: str
    date: str
    frames: int
    digest: str  # of the sequence: identical sequences are kept on one side
    where: str  # "SHEET line N" for messages


@dataclass
class Split:
    """The parts: by sequence id (``unit`` sequence_id) or by frame id (``unit`` frame_id)."""

    method: str
    unit: str
    parts: dict[str, str]  # id -> part
    options: SplitOptions
    counts: dict[str, dict[str, int]] = field(default_factory=dict)

    def describe(self) -> dict:
        """The split for metadata: settings, counts per part and the sha256 of ``split.tsv``'s content."""
        return {
            "method": self.method,
            "unit": self.unit,
            **{key: value for key, value in self.options.to_dict().items() if key != "method"},
            "counts": self.counts,
            "sha256": hashlib.sha256(self.table().encode()).hexdigest(),
        }

    def table(self) -> str:
        """``split.tsv``: a header (the unit, ``part``), then one line per sequence or frame."""
        return f"{self.unit}\tpart\n" + "".join(f"{key}\t{part}\n" for key, part in self.parts.items())


def resolve_method(options: SplitOptions, has_groups: bool, sheet: str) -> str:
    """``auto`` -> ``group`` with a group column, else ``sequence``; ``group`` without one is refused."""
    if options.method == "auto":
        return "group" if has_groups else "sequence"
    if options.method == "group" and not has_groups:
        raise InputError(f"{sheet}: --split group needs a 'group' column (a genome or taxon id per file)")
    return options.method


def make_split(
    records: Sequence[SplitRecord], options: SplitOptions, method: str, frame_ids: Sequence[tuple[str, str]] = ()
) -> Split:
    """Split ``records`` (and, for ``random``, ``frame_ids``: (frame id, record id) pairs) into parts."""
    if method == "random":
        log.warning(
            "--split random splits frames as the reference did: fragments of one sequence land on both "
            "sides, so the test scores are optimistic; prefer --split group or sequence"
        )
        parts = _random_parts([frame for frame, _ in frame_ids], options)
        split = Split(method, UNIT_FRAME, parts, options)
    else:
        if method == "date":
            parts = _date_parts(records, options)
        else:
            parts = _unit_parts(records, _units(records, method), options)
        split = Split(method, UNIT_SEQUENCE, parts, options)
    split.counts = _counts(records, split, frame_ids)
    _check_parts(split, method)
    if options.validation_fraction == 0:
        log.warning("--validation-fraction 0: early stopping watches the test part (as the reference): optimistic")
    return split


def _units(records: Sequence[SplitRecord], method: str) -> dict[str, str]:
    """Record id -> unit: its group (``group``) or itself, identical sequences sharing one (``sequence``)."""
    units: dict[str, str] = {}
    first_of_digest: dict[str, SplitRecord] = {}
    for record in records:
        earlier = first_of_digest.setdefault(record.digest, record)
        if method == "group":
            if earlier.group != record.group:
                raise InputError(
                    f"{record.where}: sequence {record.id} (group '{record.group}') is identical to "
                    f"{earlier.id} ({earlier.where}, group '{earlier.group}'): it would be on both sides of a "
                    "group split; remove the copy or give both the same group"
                )
            units[record.id] = f"group:{record.group}"
        else:
            units[record.id] = f"sequence:{earlier.id}"
    return units


def _unit_parts(records: Sequence[SplitRecord], units: dict[str, str], options: SplitOptions) -> dict[str, str]:
    """Deal whole units to test, then validation, per label, until each holds its fraction of frames."""
    frames: dict[str, int] = {}
    label_frames: dict[str, dict[str, int]] = {}
    for record in records:
        unit = units[record.id]
        frames[unit] = frames.get(unit, 0) + record.frames
        label_frames.setdefault(unit, {}).setdefault(record.label, 0)
        label_frames[unit][record.label] += record.frames
    rng = random.Random(options.seed)
    part_of_unit: dict[str, str] = {}
    for label in LABELS:
        members = [unit for unit in frames if _majority(label_frames[unit]) == label]  # first-seen order
        rng.shuffle(members)
        total = sum(frames[unit] for unit in members)
        targets = (("test", options.test_fraction * total), ("validation", options.validation_fraction * total))
        filled = {"test": 0, "validation": 0}
        for unit in members:
            part = next((name for name, target in targets if filled[name] < target), "train")
            if part != "train":
                filled[part] += frames[unit]
            part_of_unit[unit] = part
    return {record.id: part_of_unit[units[record.id]] for record in records}


def _majority(label_frames: dict[str, int]) -> str:
    """The label with most frames in a unit (ties: the first label seen)."""
    return max(label_frames, key=lambda label: label_frames[label])


def _date_parts(records: Sequence[SplitRecord], options: SplitOptions) -> dict[str, str]:
    """Test: dated on or after --before; validation: the latest earlier sequences, per label."""
    for record in records:
        if not record.date:
            raise InputError(f"{record.where}: --split date needs a date for every file (the 'date' column)")
    parts = {record.id: "test" for record in records if record.date >= options.before}
    earlier = [record for record in records if record.date < options.before]
    rng = random.Random(options.seed)
    for label in LABELS:
        members = [record for record in earlier if record.label == label]
        rng.shuffle(members)  # ties between equal dates: seeded
        members.sort(key=lambda record: record.date, reverse=True)  # stable: latest first
        target = options.validation_fraction * sum(record.frames for record in members)
        filled = 0
        for record in members:
            parts[record.id] = "validation" if filled < target else "train"
            filled += record.frames if parts[record.id] == "validation" else 0
    _warn_groups_across_dates(records, options)
    return {record.id: parts[record.id] for record in records}


def _warn_groups_across_dates(records: Sequence[SplitRecord], options: SplitOptions) -> None:
    sides: dict[str, set[bool]] = {}
    for record in records:
        if record.group:
            sides.setdefault(record.group, set()).add(record.date >= options.before)
    across = sorted(group for group, seen in sides.items() if len(seen) > 1)
    if across:
        log.warning(
            "--split date: %d group(s) have sequences on both sides of %s (first: %s): related sequences "
            "are then in training and test",
            len(across),
            options.before,
            across[0],
        )


def _random_parts(frame_ids: Sequence[str], options: SplitOptions) -> dict[str, str]:
    """The reference's split: frame indices shuffled (seeded); the first share tests, the next validates."""
    order = list(range(len(frame_ids)))
    random.Random(options.seed).shuffle(order)
    n_test = int(len(order) * options.test_fraction)
    n_validation = int(len(order) * options.validation_fraction)
    part_of = ["train"] * len(order)
    for rank, index in enumerate(order):
        part_of[index] = "test" if rank < n_test else "validation" if rank < n_test + n_validation else "train"
    return {frame: part for frame, part in zip(frame_ids, part_of)}


def _counts(records: Sequence[SplitRecord], split: Split, frame_ids: Sequence[tuple[str, str]]) -> dict:
    counts = {part: {"sequences": 0, **{f"{label}_frames": 0 for label in LABELS}} for part in PARTS}
    label_of = {record.id: record.label for record in records}
    if split.unit == UNIT_FRAME:
        for frame, record_id in frame_ids:
            counts[split.parts[frame]][f"{label_of[record_id]}_frames"] += 1
        for part in PARTS:
            counts[part].pop("sequences")
    else:
        for record in records:
            part = counts[split.parts[record.id]]
            part["sequences"] += 1
            part[f"{record.label}_frames"] += record.frames
    return counts


def _check_parts(split: Split, method: str) -> None:
    """Every part that is used must hold frames of both labels (else it cannot train or measure)."""
    wanted = ["train", "test"] + (["validation"] if split.options.validation_fraction > 0 else [])
    for part in wanted:
        for label in LABELS:
            if split.counts[part][f"{label}_frames"] == 0:
                hint = (
                    "add data, or move --before" if method == "date" else "add data or change --test-fraction / "
                    "--validation-fraction"
                )
                raise InputError(f"--split {method}: the {part} part has no frames labelled {label} ({hint})")


def write_split(path: Path, split: Split) -> None:
    """Write ``split.tsv`` atomically."""
    atomic_write_text(Path(path), split.table())


def read_split(path: Path) -> tuple[str, dict[str, str]]:
    """``(unit, {id: part})`` from a ``split.tsv``; a malformed file is a one-line InputError."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError(f"{path}: no split (prepare-labelled with --split none?)") from None
    header = tuple(lines[0].split("\t")) if lines else ()
    if header not in ((UNIT_SEQUENCE, "part"), (UNIT_FRAME, "part")):
        raise InputError(f"{path}: unexpected header {header!r}")
    parts: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        key, _, part = line.partition("\t")
        if part not in PARTS:
            raise InputError(f"{path}: line {number}: unknown part {part!r}")
        parts[key] = part
    return header[0], parts
