"""Before/after of each CPU speed change, on the frames of a benchmark run, variants interleaved.

    python benchmarks/ablation.py PREPARED_DIR MODELS_DIR [--repeat 3] [--frames N] [--only TEXT] [--json FILE]

PREPARED_DIR and MODELS_DIR come from a ``benchmarks/run.py`` run (``OUTDIR/stages/prepared``
and ``OUTDIR/models``). One process, models loaded once; each variant embeds the same frames,
repeated ``--repeat`` times in turn (so load changes on a shared machine hit all variants
alike); prints min / median / max seconds per variant.

ESM-2: fair-esm's ``ESM2.forward`` (stock ``nn.Linear``, i.e. MKL), the same with oneDNN
linears, our forward with MKL linears (as shipped for AVX2 CPUs) and with oneDNN (as shipped
for AVX-512 CPUs). DNA: one sequence per forward (the reference), batched with MKL (AVX2),
batched with oneDNN without the CPU cache-sized groups, and with them (AVX-512). Our forwards
run one batch at a time on all torch threads (before) and, as shipped, batches side by side,
one thread each (:mod:`virnucpro.engine.cpu_batches`). Token budgets: the predict defaults.
``--only TEXT`` keeps the variants whose name contains TEXT.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.reference_strategy import dna_one_by_one, esm_fair_batches  # noqa: E402
from virnucpro.embeddings.dna import DNA_TOKEN_BUDGET  # noqa: E402
from virnucpro.embeddings.esm import ESM_TOKEN_BUDGET_CPU  # noqa: E402
from virnucpro.engine.cpu_batches import batches_side_by_side  # noqa: E402
from virnucpro.engine.embed_file import embedded_batches  # noqa: E402


def _variants(esm, dna, proteins: list[tuple[str, str]], nucleotides: list[tuple[str, str]], budgets: dict) -> dict:
    from virnucpro.embeddings import cpu_linear

    def onednn(on: bool) -> None:
        os.environ[cpu_linear.ENV_SWITCH] = "1" if on else "0"
        cpu_linear.onednn_chosen.cache_clear()

    def batched(embedder, records, budget: int, side_by_side: bool) -> None:
        sequences = [seq for _, seq in records]
        batches = embedder.make_batches(sequences, budget)
        with batches_side_by_side("cpu") if side_by_side else nullcontext(1) as parallel:
            for _ in embedded_batches(embedder, sequences, batches, parallel):
                pass

    def stock_esm(with_onednn: bool) -> None:
        onednn(True)
        if with_onednn:
            cpu_linear.use_onednn_linears(esm.model)
        try:
            esm_fair_batches(esm, proteins, budgets["esm"])
        finally:
            cpu_linear.restore_linears(esm.model)

    def ours_esm(with_onednn: bool, side_by_side: bool) -> None:
        onednn(with_onednn)
        try:
            batched(esm, proteins, budgets["esm"], side_by_side)
        finally:
            onednn(True)

    def dna_batched(linears: str, cap: bool, side_by_side: bool) -> None:
        saved = dna._cpu_tokens
        onednn(linears == "onednn")
        if not cap:
            dna._cpu_tokens = 1 << 40
        try:
            batched(dna, nucleotides, budgets["dna"], side_by_side)
        finally:
            onednn(True)
            dna._cpu_tokens = saved

    def dna_reference() -> None:
        onednn(False)
        try:
            dna_one_by_one(dna, iter(nucleotides))
        finally:
            onednn(True)

    return {
        "esm: fair-esm forward, MKL (reference)": lambda: stock_esm(False),
        "esm: fair-esm forward, oneDNN linears": lambda: stock_esm(True),
        "esm: our forward, MKL, one batch at a time": lambda: ours_esm(False, False),
        "esm: our forward, MKL, side by side (shipped on AVX2 CPUs)": lambda: ours_esm(False, True),
        "esm: our forward, oneDNN, one batch at a time": lambda: ours_esm(True, False),
        "esm: our forward, oneDNN, side by side (shipped on AVX-512 CPUs)": lambda: ours_esm(True, True),
        "dna: one per forward, MKL (reference)": dna_reference,
        "dna: batched, MKL, one at a time": lambda: dna_batched("mkl", True, False),
        "dna: batched, MKL, side by side (shipped on AVX2 CPUs)": lambda: dna_batched("mkl", True, True),
        "dna: batched, oneDNN, no cache groups, one at a time": lambda: dna_batched("onednn", False, False),
        "dna: batched, oneDNN, cache groups, one at a time": lambda: dna_batched("onednn", True, False),
        "dna: batched, oneDNN, cache groups, side by side (shipped on AVX-512 CPUs)": (
            lambda: dna_batched("onednn", True, True)
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prepared", type=Path)
    parser.add_argument("models", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--frames", type=int, default=0, help="use the first N frames only (0: all)")
    parser.add_argument("--esm-batch-tokens", type=int, default=ESM_TOKEN_BUDGET_CPU)
    parser.add_argument("--dna-batch-tokens", type=int, default=DNA_TOKEN_BUDGET)
    parser.add_argument("--only", default="", help="keep the variants whose name contains this text")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from virnucpro.embeddings.dna import load_dna_embedder
    from virnucpro.embeddings.esm import load_esm_embedder
    from virnucpro.seqio import read_fasta

    proteins = list(read_fasta(args.prepared / "frames.protein.faa"))
    nucleotides = list(read_fasta(args.prepared / "frames.nucleotide.fa"))
    if args.frames:
        proteins, nucleotides = proteins[: args.frames], nucleotides[: args.frames]
    esm = load_esm_embedder(str(next(args.models.glob("esm2_*.pt"))))
    dna = load_dna_embedder(str(args.models / "dna"))
    budgets = {"esm": args.esm_batch_tokens, "dna": args.dna_batch_tokens}
    variants = {
        name: run for name, run in _variants(esm, dna, proteins, nucleotides, budgets).items() if args.only in name
    }
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for number in range(args.repeat):
        for name, run in variants.items():
            start = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - start)
        print(f"round {number + 1}/{args.repeat} done (load {os.getloadavg()[0]:.2f})", flush=True)
    rows = {}
    print(f"\n{len(proteins)} frames; seconds min / median / max over {args.repeat} rounds")
    for name, values in seconds.items():
        rows[name] = {"min": min(values), "median": statistics.median(values), "max": max(values)}
        print(f"  {name:<72} {rows[name]['min']:7.2f} {rows[name]['median']:7.2f} {rows[name]['max']:7.2f}")
    if args.json:
        report = {"frames": len(proteins), "budgets": budgets, "seconds": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
