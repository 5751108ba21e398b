"""The report's plots: matplotlib figures (no pyplot, no global backend) as inline SVG text."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
from matplotlib import rc_context
from matplotlib.collections import PolyCollection
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from virnucpro import contracts as c
from virnucpro.report.data import LENGTH_BINS, P_BINS, SampleReport

CALL_COLOURS = {
    c.CALL_VIRUS: "#c0392b",
    c.CALL_OTHERS: "#2e86c1",
    c.CALL_NO_FRAME: "#b3b6b7",
    c.CALL_FAILED: "#f39c12",
}
FEW_SAMPLES = 8  # up to this many: one line per sample; more: one heat-map row per sample
_WIDTH = 9.0
_RC = {"font.size": 9, "axes.spines.top": False, "axes.spines.right": False, "svg.fonttype": "none"}


def _figure(height: float) -> Figure:
    return Figure(figsize=(_WIDTH, height), layout="constrained")


def _svg(figure: Figure, name: str) -> str:
    """The figure as an ``<svg>`` element to put in HTML (ids made unique by ``name``)."""
    buffer = io.StringIO()
    with rc_context({**_RC, "svg.hashsalt": f"virnucpro-{name}"}):
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": "virnucpro"})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _sample_height(samples: int) -> float:
    return min(2.0 + 0.22 * samples, 40.0)


def calls_per_sample(samples: Sequence[SampleReport]) -> str:
    """Stacked bars: the share of each call per sample (one collection of rectangles per call)."""
    with rc_context(_RC):
        figure = _figure(_sample_height(len(samples)))
        axes = figure.add_subplot()
        left = np.zeros(len(samples))
        rows = np.arange(len(samples))
        for call, colour in CALL_COLOURS.items():
            share = np.array([sample.calls[call] / max(sample.records, 1) for sample in samples])
            boxes = [[(x, y - 0.4), (x + w, y - 0.4), (x + w, y + 0.4), (x, y + 0.4)] for x, w, y in zip(left, share, rows)]
            axes.add_collection(PolyCollection(boxes, facecolors=colour, edgecolors="none", label=call))
            left += share
        axes.set_yticks(rows, [sample.name for sample in samples], fontsize=7 if len(samples) > 30 else 9)
        axes.set_ylim(len(samples) - 0.5, -0.5)  # the first sample on top, no margin below the last
        axes.set_xlim(0, 1)
        axes.set_xlabel("share of the sample's sequences")
        axes.legend(ncols=4, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
        return _svg(figure, "calls")


def p_virus_distribution(samples: Sequence[SampleReport], threshold: float | None) -> str:
    """The chunks' highest P(virus): one line per sample, or a heat map for many samples."""
    with_data = [sample for sample in samples if sample.chunk_p_virus.sum()]
    if not with_data:
        return ""
    with rc_context(_RC):
        centres = (P_BINS[:-1] + P_BINS[1:]) / 2
        if len(with_data) <= FEW_SAMPLES:
            figure = _figure(3.2)
            axes = figure.add_subplot()
            for sample in with_data:
                share = sample.chunk_p_virus / sample.chunk_p_virus.sum()
                axes.step(centres, share, where="mid", label=sample.name)
            axes.set_ylabel("share of chunks")
            axes.legend(frameon=False, fontsize=8)
            if threshold is not None:
                axes.axvline(threshold, color="black", linestyle="--", linewidth=1)
        else:
            figure = _figure(_sample_height(len(with_data)))
            axes = figure.add_subplot()
            shares = np.array([sample.chunk_p_virus / sample.chunk_p_virus.sum() for sample in with_data])
            image = axes.imshow(shares, aspect="auto", cmap="viridis", extent=(0, 1, len(with_data) - 0.5, -0.5))
            axes.set_yticks(range(len(with_data)), [sample.name for sample in with_data], fontsize=7)
            figure.colorbar(image, ax=axes, label="share of the sample's chunks", location="top", shrink=0.5, aspect=40)
        axes.set_xlim(0, 1)
        axes.set_xlabel("highest P(virus) of a chunk")
        return _svg(figure, "p-virus")


def length_vs_score(samples: Sequence[SampleReport]) -> str:
    """Sequence length against its highest P(virus), all samples together (counts, log colour)."""
    counts = sum((sample.length_score for sample in samples), np.zeros_like(samples[0].length_score))
    if not counts.sum():
        return ""
    with rc_context(_RC):
        figure = _figure(3.6)
        axes = figure.add_subplot()
        shown = np.ma.masked_equal(counts.T, 0)
        mesh = axes.pcolormesh(LENGTH_BINS, P_BINS, shown, cmap="magma_r", norm=LogNorm(vmin=1), rasterized=True)
        axes.set_xscale("log")
        occupied = np.nonzero(counts.sum(axis=1))[0]
        axes.set_xlim(LENGTH_BINS[occupied[0]], LENGTH_BINS[occupied[-1] + 1])
        axes.set_xlabel("sequence length (bp)")
        axes.set_ylabel("highest P(virus) of its chunks")
        figure.colorbar(mesh, ax=axes, label="sequences")
        return _svg(figure, "length-score")


def region_lengths(samples: Sequence[SampleReport]) -> str:
    """Lengths of the viral regions, all samples together."""
    counts = sum((sample.region_lengths for sample in samples), np.zeros_like(samples[0].region_lengths))
    if not counts.sum():
        return ""
    with rc_context(_RC):
        figure = _figure(2.8)
        axes = figure.add_subplot()
        axes.stairs(counts, LENGTH_BINS, fill=True, color=CALL_COLOURS[c.CALL_VIRUS])
        axes.set_xscale("log")
        occupied = np.nonzero(counts)[0]
        axes.set_xlim(LENGTH_BINS[occupied[0]], LENGTH_BINS[occupied[-1] + 1])
        axes.set_xlabel("region length (bp)")
        axes.set_ylabel("regions")
        return _svg(figure, "regions")
