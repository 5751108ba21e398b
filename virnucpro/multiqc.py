"""MultiQC custom content: per sample ``<sample>_virnucpro_mqc.tsv`` (a bar plot of the calls) and
``<sample>_virnucpro_mqc.yaml`` (General Statistics columns). MultiQC finds both by their names
(``multiqc DIR``, no configuration needed) and merges the samples' files into one plot and one
set of columns."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from virnucpro import contracts as c
from virnucpro.atomic import atomic_write_text
from virnucpro.summarize import SampleStatus

SECTION_ID = "virnucpro"  # the bar plot's section in the report
PLOT_ID = "virnucpro_calls"  # the bar plot; its data: multiqc_data/multiqc_virnucpro_calls.txt
GENERAL_STATS_ID = "virnucpro_general"

_BAR_HEADER = f"""# id: '{SECTION_ID}'
# section_name: 'VirNucPro'
# description: 'Calls per sample: <code>virus</code>, <code>others</code>, <code>no_coding_frame</code> (no chunk has a stop-free frame), <code>failed</code> (an embedding failed; see failed_files.txt).'
# plot_type: 'bargraph'
# pconfig:
#     id: '{PLOT_ID}'
#     title: 'VirNucPro: calls per sample'
#     ylab: 'Sequences'
#     cpswitch_c_active: False
"""

_GENERAL_STATS_COLUMNS = {
    "virus": {"title": "Viral", "description": "Sequences called virus (VirNucPro)", "format": "{:,.0f}",
              "scale": "Reds"},
    "virus_percent": {"title": "% Viral", "description": "Percent of sequences called virus (VirNucPro)",
                      "suffix": "%", "min": 0, "max": 100, "scale": "Reds"},
    "regions": {"title": "Viral regions", "description": "Viral regions in viral_regions.tsv (VirNucPro)",
                "format": "{:,.0f}", "scale": "Purples", "hidden": True},
    "failed": {"title": "Failed", "description": "Sequences without a call because an embedding failed (VirNucPro)",
               "format": "{:,.0f}", "scale": "Oranges"},
}  # fmt: skip


def file_names(sample: str) -> tuple[str, str]:
    """The TSV and YAML names of a sample."""
    return f"{sample}_virnucpro_mqc.tsv", f"{sample}_virnucpro_mqc.yaml"


def write_multiqc(samples: Sequence[SampleStatus], directory: Path) -> list[Path]:
    """Write both files of every sample into ``directory``; returns their paths. A sample without
    a readable summary.json (its task was lost) gets none: MultiQC shows no value rather than 0."""
    directory = Path(directory)
    written = []
    for sample in samples:
        if not sample.summary:
            continue
        name = _clean(sample.sample)
        calls = {call: int(sample.summary.get("calls", {}).get(call, 0)) for call in c.CALLS}
        records = sum(calls.values())
        tsv, yaml = (directory / file_name for file_name in file_names(name))
        atomic_write_text(tsv, _BAR_HEADER + "\t".join(("Sample", *c.CALLS)) + "\n"
                          + "\t".join((name, *map(str, calls.values()))) + "\n")  # fmt: skip
        stats = {
            "virus": calls[c.CALL_VIRUS],
            "virus_percent": round(100 * calls[c.CALL_VIRUS] / records, 2) if records else 0,
            "regions": int((sample.summary.get("regions") or {}).get("count", 0)),
            "failed": calls[c.CALL_FAILED],
        }
        atomic_write_text(yaml, _general_stats_yaml(name, stats))
        written += [tsv, yaml]
    return written


def _clean(sample: str) -> str:
    """A sample name that fits a file name and a TSV cell."""
    return "".join("_" if char in "/\t\n\r" else char for char in sample)


def _general_stats_yaml(sample: str, stats: dict[str, float]) -> str:
    """The YAML of one sample's General Statistics columns (strings JSON-quoted: valid YAML)."""
    lines = [
        f"id: {GENERAL_STATS_ID}",
        "section_name: VirNucPro",
        "plot_type: generalstats",
        "pconfig:",
    ]
    for column, config in _GENERAL_STATS_COLUMNS.items():
        lines.append(f"  - {column}:")
        lines += [f"      {key}: {json.dumps(value)}" for key, value in config.items()]
    lines.append("data:")
    lines.append(f"  {json.dumps(sample)}:")
    lines += [f"    {column}: {json.dumps(value)}" for column, value in stats.items()]
    return "\n".join(lines) + "\n"
