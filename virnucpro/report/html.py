"""The report as one self-contained HTML file: inline CSS and SVG, no script, nothing fetched."""

from __future__ import annotations

import datetime
import html
import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from virnucpro import __version__
from virnucpro import contracts as c
from virnucpro.report import plots
from virnucpro.report.data import SampleReport

MAX_FAILURE_LINES = 100
MAX_REASONS = 50
MAX_FILE_ROWS = 500
FOLD_ROWS = 20  # longer tables are folded (<details>), the overview's open

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #1c2833; background: #fdfefe; line-height: 1.4; }
header { background: #1c2833; color: #fdfefe; padding: 1em 2em; }
header h1 { margin: 0 0 .2em 0; font-size: 1.5em; }
header p { margin: 0; color: #d5d8dc; font-size: .9em; }
nav { padding: .5em 2em; background: #eaecee; font-size: .9em; position: sticky; top: 0; }
nav a { margin-right: 1.2em; color: #1a5276; text-decoration: none; }
main { padding: 0 2em 2em 2em; max-width: 1100px; }
section { margin-top: 1.8em; }
h2 { border-bottom: 2px solid #d5d8dc; padding-bottom: .2em; font-size: 1.2em; }
table { border-collapse: collapse; font-size: .85em; margin: .6em 0; }
th, td { border: 1px solid #d5d8dc; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f2f3f4; }
td.n { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #1e8449; font-weight: 600; } .partial { color: #b9770e; font-weight: 600; }
.failed { color: #c0392b; font-weight: 600; }
.note { color: #566573; font-size: .9em; }
.cards { display: flex; flex-wrap: wrap; gap: .8em; margin: .8em 0; }
.card { border: 1px solid #d5d8dc; border-radius: 6px; padding: .5em 1em; min-width: 8em; }
.card b { display: block; font-size: 1.4em; }
svg { max-width: 100%; height: auto; }
code { background: #f2f3f4; padding: 0 .2em; }
summary { cursor: pointer; color: #1a5276; margin: .4em 0; }
"""

SECTIONS = (
    ("overview", "Overview"),
    ("calls", "Calls per sample"),
    ("scores", "P(virus) distributions"),
    ("length-score", "Length and score"),
    ("regions", "Viral regions"),
    ("pairs", "Read pairs"),
    ("extracted", "Extracted sequences"),
    ("failures", "Failures"),
    ("throughput", "Throughput"),
    ("parameters", "Models and parameters"),
)


def render(samples: Sequence[SampleReport], title: str, engines: Sequence[dict[str, Any]] = ()) -> str:
    """The whole report; ``engines``: engine statistics of embedding tasks run apart (the pipeline)."""
    engines = list(engines) or [
        stage for sample in samples for stage in (sample.summary.get("engine") or {}).values() if isinstance(stage, dict)
    ]
    threshold = _single(sample.summary.get("call_rule", {}).get("min_p_virus") for sample in samples)
    bodies = {
        "overview": _overview(samples),
        "calls": _figure_or_note(plots.calls_per_sample(samples) if samples else "", "no sample"),
        "scores": _scores(samples, threshold if isinstance(threshold, float) else None),
        "length-score": _length_score(samples),
        "regions": _regions(samples),
        "pairs": _pairs(samples),
        "extracted": _extracted(samples),
        "failures": _failures(samples),
        "throughput": _throughput(samples, engines),
        "parameters": _parameters(samples),
    }
    generated = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name in SECTIONS)
    sections = "".join(
        f'<section id="{key}"><h2>{html.escape(name)}</h2>{bodies[key]}</section>' for key, name in SECTIONS
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{html.escape(title)}</h1><p>virnucpro {html.escape(__version__)} &middot; "
        f"{len(samples)} sample{'s' if len(samples) != 1 else ''} &middot; generated {generated}</p></header>"
        f"<nav>{nav}</nav><main>{sections}</main></body></html>\n"
    )


def _e(value: object) -> str:
    return html.escape(str(value))


def _table(
    headers: Sequence[str], rows: Iterable[Sequence[object]], numeric: Sequence[int] = (), fold: str = "closed"
) -> str:
    """An HTML table; with more than FOLD_ROWS rows it is folded, ``open`` or ``closed``."""
    rows = list(rows)
    head = "".join(f"<th>{_e(header)}</th>" for header in headers)
    body = "".join(
        "<tr>" + "".join(_cell(value, index in numeric) for index, value in enumerate(row)) + "</tr>" for row in rows
    )
    table = f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if len(rows) <= FOLD_ROWS:
        return table
    state = " open" if fold == "open" else ""
    return f"<details{state}><summary>{len(rows):,} rows</summary>{table}</details>"


def _cell(value: object, numeric: bool) -> str:
    if isinstance(value, _Raw):
        return f"<td>{value.html}</td>"
    if isinstance(value, float):
        value = f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f'<td class="n">{_e(value)}</td>' if numeric else f"<td>{_e(value)}</td>"


class _Raw:
    """A table cell given as HTML."""

    def __init__(self, markup: str) -> None:
        self.html = markup


def _note(text: str) -> str:
    return f'<p class="note">{text}</p>'


def _figure_or_note(svg: str, missing: str) -> str:
    return f"<figure>{svg}</figure>" if svg else _note(_e(missing))


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "NA"


def _overview(samples: Sequence[SampleReport]) -> str:
    statuses = Counter(sample.status for sample in samples)
    calls = Counter()
    for sample in samples:
        calls.update(sample.calls)
    records = sum(calls.values())
    cards = [
        ("samples", f"{len(samples):,}", ", ".join(f"{n} {status}" for status, n in sorted(statuses.items()))),
        ("sequences", f"{records:,}", ""),
        ("virus", f"{calls[c.CALL_VIRUS]:,}", _percent(calls[c.CALL_VIRUS], records)),
        ("regions", f"{sum(s.regions for s in samples):,}", ""),
        ("failed", f"{calls[c.CALL_FAILED]:,}", f"{sum(len(s.failures) for s in samples):,} failure lines"),
    ]
    card_html = "".join(f'<div class="card">{_e(name)}<b>{value}</b>{_e(extra)}</div>' for name, value, extra in cards)
    rows = [
        (
            _Raw(f'<span class="{_e(sample.status)}">{_e(sample.name)}</span>'),
            _Raw(f'<span class="{_e(sample.status)}">{_e(sample.status)}</span>'
                 + (f'<br><span class="note">{_e(sample.problem)}</span>' if sample.problem else "")),
            sample.records,
            *(sample.calls[call] for call in c.CALLS),
            _percent(sample.calls[c.CALL_VIRUS], sample.records),
            sample.pairs,
            sample.regions,
            len(sample.failures),
        )
        for sample in samples
    ]
    headers = ("sample", "status", "sequences", *c.CALLS, "% virus", "pairs", "regions", "failure lines")
    return f'<div class="cards">{card_html}</div>' + _table(headers, rows, range(2, len(headers)), fold="open")


def _scores(samples: Sequence[SampleReport], threshold: float | None) -> str:
    rule = (
        f"A chunk is virus when its highest P(virus) is at least <code>--min-p-virus {threshold}</code> (dashed line)."
        if threshold is not None
        else "A chunk is virus when its highest P(virus) is at least its highest P(others) (the reference's rule)."
    )
    text = _note(
        "P(virus) is the classifier's softmax score for the virus class; a chunk's is the highest over its "
        f"kept frames. {rule} Scores of random test models carry no meaning; with the reference models, the "
        "share of chunks near 0 and near 1 shows how clear-cut a sample is."
    )
    return text + _figure_or_note(plots.p_virus_distribution(samples, threshold), "no scored chunk")


def _length_score(samples: Sequence[SampleReport]) -> str:
    svg = plots.length_vs_score(samples) if samples else ""
    return _note("Each sequence with a score: its length and the highest P(virus) of its chunks.") + _figure_or_note(
        svg, "no scored sequence"
    )


def _regions(samples: Sequence[SampleReport]) -> str:
    rules = {json.dumps(sample.summary.get("regions", {}).get("max_gap")) for sample in samples}
    text = _note(
        "Runs of virus chunks (<code>viral_regions.tsv</code>); coordinates are 1-based and inclusive. "
        f"Chunks not called virus allowed inside a region: {_e(', '.join(sorted(rules)))}."
    )
    if not any(sample.regions for sample in samples):
        return text + _note("no viral region")
    top = sorted((entry for sample in samples for entry in sample.top_regions), reverse=True)[:FOLD_ROWS]
    rows = [
        (sample, region_id, start, end, length, f"{virus}/{chunks}", mean)
        for length, sample, region_id, start, end, chunks, virus, mean in top
    ]
    table = _table(("sample", "sequence", "start", "end", "length", "virus chunks", "mean P(virus)"), rows, (2, 3, 4, 6))
    return text + _figure_or_note(plots.region_lengths(samples), "") + "<h3>Longest regions</h3>" + table


def _pairs(samples: Sequence[SampleReport]) -> str:
    paired = [sample for sample in samples if sample.pairs]
    if not paired:
        return _note("no paired-end reads (mate files are recognised by <code>--pairing</code>)")
    rules = sorted({str(sample.summary.get("call_rule", {}).get("pair_rule")) for sample in paired})
    rows = [(s.name, s.pairs, *(s.pair_calls.get(call, 0) for call in c.CALLS)) for s in paired]
    return _note(f"Pair calls under <code>--pair-rule {_e(', '.join(rules))}</code>.") + _table(
        ("sample", "pairs", *c.CALLS), rows, numeric=range(1, 2 + len(c.CALLS))
    )


def _extracted(samples: Sequence[SampleReport]) -> str:
    rows, skipped = [], []
    for sample in samples:
        extract = sample.summary.get("extract") or {}
        rows += [
            (sample.name, entry["input"], f"{c.EXTRACT_DIR}/{Path(entry['path']).name}", entry["records"])
            for entry in extract.get("files", [])
        ]
        skipped += [(sample.name, name, why) for name, why in (extract.get("skipped") or {}).items()]
    if not rows and not skipped:
        return _note("nothing extracted (<code>--extract none</code>, or no summary of it)")
    shown = _table(("sample", "input", "file", "records"), rows[:MAX_FILE_ROWS], numeric=(3,))
    more = _note(f"and {len(rows) - MAX_FILE_ROWS:,} more files") if len(rows) > MAX_FILE_ROWS else ""
    left_out = "<h3>Not extracted</h3>" + _table(("sample", "input", "why"), skipped) if skipped else ""
    return shown + more + left_out


def _failures(samples: Sequence[SampleReport]) -> str:
    lines = [(sample.name, f.file_path, f.stage, f.message) for sample in samples for f in sample.failures]
    reasons = Counter()
    for sample in samples:
        reasons.update(sample.failed_reasons)
    if not lines and not reasons:
        return _note("nothing failed")
    parts = []
    if reasons:
        parts.append("<h3>Why sequences failed</h3>")
        parts.append(_table(("reason", "sequences"), reasons.most_common(MAX_REASONS), numeric=(1,)))
        if len(reasons) > MAX_REASONS:
            parts.append(_note(f"and {len(reasons) - MAX_REASONS:,} more reasons (the reason column of sequence_predictions.tsv)"))
    if lines:
        parts.append("<h3>Failure lines (<code>failed_files.txt</code>)</h3>")
        parts.append(_table(("sample", "file", "stage", "message"), lines[:MAX_FAILURE_LINES]))
        if len(lines) > MAX_FAILURE_LINES:
            parts.append(_note(f"and {len(lines) - MAX_FAILURE_LINES:,} more in failed_files.txt"))
    return "".join(parts)


def _throughput(samples: Sequence[SampleReport], engines: Sequence[dict[str, Any]]) -> str:
    parts = []
    devices: dict[tuple[str, str], Counter] = {}
    precisions: dict[tuple[str, str], set] = {}
    for engine in engines:
        for device, stats in (engine.get("devices") or {}).items():
            key = (str(engine.get("stage", "?")), device)
            totals = devices.setdefault(key, Counter())
            for name in ("files", "sequences", "tokens", "busy_s", "failures"):
                totals[name] += stats.get(name) or 0
            totals["workers"] = max(totals["workers"], stats.get("workers") or 0)
            precisions.setdefault(key, set()).add(str(stats.get("precision")))
    if devices:
        rows = [
            (stage, device, ", ".join(sorted(precisions[(stage, device)])), t["workers"], t["files"], t["sequences"],
             t["tokens"], t["busy_s"], t["tokens"] / t["busy_s"] if t["busy_s"] else "NA", t["failures"])
            for (stage, device), t in sorted(devices.items())
        ]  # fmt: skip
        headers = ("stage", "device", "precision", "workers", "files", "sequences", "tokens", "busy s", "tokens/s",
                   "failures")  # fmt: skip
        parts.append("<h3>Embedding, per stage and device</h3>")
        parts.append(_table(headers, rows, numeric=range(3, len(headers))))
        parts.append(_note("tokens/s: tokens over the seconds the device's workers were busy embedding."))
    stages = sorted({stage for sample in samples for stage in (sample.summary.get("timings_s") or {})})
    if stages:
        parts.append("<h3>Wall seconds per stage</h3>")
        timed = [sample for sample in samples if sample.summary.get("timings_s")]
        rows = [(s.name, *(s.summary["timings_s"].get(stage, "") for stage in stages)) for s in timed[:MAX_FILE_ROWS]]
        if len(timed) > 1:
            total = ("all samples", *(sum(s.summary["timings_s"].get(stage, 0) for s in timed) for stage in stages))
            parts.append(_table(("", *stages), [total], numeric=range(1, 1 + len(stages))))
        parts.append(_table(("sample", *stages), rows, numeric=range(1, 1 + len(stages))))
    return "".join(parts) or _note("no timings recorded")


def _single(values: Iterable[object]) -> object:
    """The one value all samples share, or a list of the different values."""
    distinct = list(dict.fromkeys(json.dumps(value, sort_keys=True, default=str) for value in values))
    if len(distinct) == 1:
        return json.loads(distinct[0])
    return [json.loads(value) for value in distinct]


def _parameters(samples: Sequence[SampleReport]) -> str:
    if not samples:
        return _note("no sample")
    summaries = [sample.summary for sample in samples if sample.summary]
    if not summaries:
        return _note("no sample has a summary.json")
    keys = ("command", "chunk_length", "call_rule", "regions", "pairing")
    rows = []
    for key in keys:
        value = _single(summary.get(key) for summary in summaries)
        if key == "regions":
            value = _single({k: v for k, v in (s.get(key) or {}).items() if k != "count"} for s in summaries)
        if value is not None:
            rows.append((key, _Raw(f"<code>{_e(json.dumps(value, sort_keys=True))}</code>")))
    calls = _single((summary.get("extract") or {}).get("calls") for summary in summaries)
    rows.append(("extract", _Raw(f"<code>{_e(json.dumps(calls))}</code>")))
    models = _single(summary.get("models") for summary in summaries)
    model_rows = []
    for model_list in models if isinstance(models, list) else [models]:
        for name, meta in (model_list or {}).items():
            described = ", ".join(f"{k}={v}" for k, v in sorted(meta.items()) if k not in ("extra",)) if isinstance(meta, dict) else meta
            model_rows.append((name, described))
    versions = _single(summary.get("versions") for summary in summaries)
    version_rows = [
        (package, version) for mapping in (versions if isinstance(versions, list) else [versions])
        for package, version in (mapping or {}).items()
    ]  # fmt: skip
    return (
        _table(("setting", "value"), rows)
        + "<h3>Models</h3>"
        + (_table(("model", "identity"), model_rows) if model_rows else _note("no model recorded"))
        + "<h3>Software</h3>"
        + (_table(("package", "version"), version_rows) if version_rows else _note("no versions recorded"))
    )
