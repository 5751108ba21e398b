"""Benchmark every stage of virnucpro and the whole ``predict`` against the reference strategy.

    python benchmarks/run.py --reads 1000 --length 300 [--coding-fraction 1.0] [--size t6|tiny]
                             [--outdir DIR] [--json FILE] [--repeat R] [--scale K] [--no-reference]

Makes a reproducible synthetic read set and random test models, measures the machine's fp32
GEMM rate, then runs, each in a fresh process: prepare, DNA embedding, ESM-2 embedding,
classify, the whole ``virnucpro predict`` and the reference tool's strategy
(benchmarks/reference_strategy.py). Prints a table (wall time, sequences/s, tokens/s, GFLOP/s
against the GEMM rate, peak RSS) and the speed-ups, and writes the same as JSON.
``--scale K`` also runs predict on K times the reads and compares the peak memories.
See docs/performance.md for the method and the measured numbers.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `virnucpro` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.report import embed_row, table, whole_run_row  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent


def run_child(stage: str, scratch: Path, /, **kwargs) -> dict:
    """Run one stage in a fresh Python process; its result plus ``process_s`` (start to exit)."""
    request = scratch / f".request_{stage}.json"
    answer = scratch / f".result_{stage}.json"
    request.write_text(json.dumps({"stage": stage, "kwargs": kwargs}), encoding="utf-8")
    answer.unlink(missing_ok=True)
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.child", str(request), str(answer)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
    )
    process_s = time.perf_counter() - start
    if done.returncode != 0 or not answer.is_file():
        raise SystemExit(f"benchmark stage {stage} failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(answer.read_text(encoding="utf-8"))
    result["process_s"] = process_s
    return result


def write_read_set(path: Path, reads: int, length: int, coding_fraction: float, seed: int) -> Path:
    """The synthetic reads (virnucpro.synthetic): same arguments, same file."""
    from virnucpro.synthetic import synthetic_reads, write_reads

    write_reads(path, synthetic_reads(reads, length, coding_fraction=coding_fraction, seed=seed))
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    from virnucpro.embeddings.dna import DNA_TOKEN_BUDGET
    from virnucpro.embeddings.esm import ESM_TOKEN_BUDGET_CPU
    from virnucpro.predict import PredictOptions

    defaults = PredictOptions()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reads", type=int, default=1000, help="number of reads (default 1000)")
    parser.add_argument("--length", type=int, default=300, help="read length in bp (default 300)")
    parser.add_argument("--coding-fraction", type=float, default=1.0, help="share of coding-like reads (default 1.0)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", choices=("t6", "tiny"), default="t6", help="test model size (default t6)")
    parser.add_argument("--chunk-length", type=int, choices=(300, 500), default=300)
    parser.add_argument("--esm-batch-tokens", type=int, default=ESM_TOKEN_BUDGET_CPU, help="default %(default)s: predict's CPU default")
    parser.add_argument("--dna-batch-tokens", type=int, default=DNA_TOKEN_BUDGET, help="default %(default)s: predict's default")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16"), default="auto",
                        help="embedding precision of our stages (default auto: bf16 where the CPU has bf16 "
                             "instructions and the parity check passes); the reference strategy runs fp32")
    parser.add_argument("--shard-size", type=int, default=defaults.shard_size, help="residues per shard")
    parser.add_argument("--repeat", type=int, default=1, help="runs of predict and of the reference (alternating)")
    parser.add_argument("--scale", type=int, default=0, metavar="K", help="also run predict on K x the reads")
    parser.add_argument("--no-reference", action="store_true", help="skip the reference strategy")
    parser.add_argument("--quick-gemm", action="store_true", help="small, short GEMM measurement (smoke tests)")
    parser.add_argument("--outdir", type=Path, help="working directory (default: benchmarks/out/run-DATE-TIME)")
    parser.add_argument("--json", type=Path, help="write the results here (default OUTDIR/benchmark.json)")
    args = parser.parse_args(argv)
    if args.reads < 1 or args.length < 1 or args.repeat < 1 or not 0.0 <= args.coding_fraction <= 1.0:
        parser.error("--reads, --length and --repeat must be positive; --coding-fraction in [0, 1]")
    return args


def run_benchmark(args: argparse.Namespace) -> dict:
    """Every stage, predict and the reference; the figures as one dict."""
    outdir = args.outdir or REPO_ROOT / "benchmarks" / "out" / datetime.datetime.now().strftime("run-%Y%m%d-%H%M%S")
    outdir = outdir.resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    reads = write_read_set(outdir / "reads.fa", args.reads, args.length, args.coding_fraction, args.seed)
    models = run_child(
        "models", outdir, outdir=str(outdir / "models"), size=args.size, chunk_length=args.chunk_length
    )["paths"]
    hardware = run_child("gemm", outdir, quick=args.quick_gemm)
    gemm = hardware["gemm"]
    prepared = outdir / "stages" / "prepared"
    common = {"chunk_length": args.chunk_length}
    prepare = run_child(
        "prepare", outdir, reads=str(reads), prepared=str(prepared), shard_size=args.shard_size, **common
    )
    embed = {
        kind: run_child("embed", outdir, kind=kind, model=models[kind], prepared=str(prepared),
                        outdir=str(outdir / "stages" / kind), token_budget=budget, precision=args.precision)
        for kind, budget in (("dna", args.dna_batch_tokens), ("esm", args.esm_batch_tokens))
    }
    classify = run_child("classify", outdir, prepared=str(prepared), dna_dir=str(outdir / "stages" / "dna"),
                         esm_dir=str(outdir / "stages" / "esm"), outdir=str(outdir / "stages" / "classify"),
                         classifier=models["classifier"], **common)
    predict_kwargs = {"models": models, "esm_tokens": args.esm_batch_tokens, "dna_tokens": args.dna_batch_tokens,
                      "shard_size": args.shard_size, "precision": args.precision, **common}
    predicts, references = [], []
    for number in range(args.repeat):
        predicts.append(
            run_child("predict", outdir, reads=str(reads), outdir=str(outdir / f"predict_{number}"), **predict_kwargs)
        )
        if not args.no_reference:
            references.append(
                run_child("reference", outdir, reads=str(reads), workdir=str(outdir / f"reference_{number}"),
                          models=models, **common)
            )
    tokens = embed["dna"]["tokens"] + embed["esm"]["tokens"]
    flops = embed["dna"]["flops"] + embed["esm"]["flops"]
    model_s = embed["dna"]["model_s"] + embed["esm"]["model_s"]
    predict = whole_run_row([p["wall_s"] for p in predicts], predicts, args.reads, tokens, flops, gemm)
    timings = {name: statistics.median(p["timings_s"][name] for p in predicts) for name in predicts[-1]["timings_s"]}
    predict.update(timings_s=timings, engine=predicts[-1]["engine"], exit_status=predicts[-1]["exit_status"],
                   non_model_s=predict["wall_s"] - model_s, non_model_fraction=1 - model_s / predict["wall_s"])
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {key: (str(value) if isinstance(value, Path) else value) for key, value in vars(args).items()},
        "machine": hardware["machine"],
        "gemm": gemm,
        "stages": {
            "prepare": {**prepare, "sequences_per_s": args.reads / prepare["wall_s"]},
            "embed_dna": {**embed_row(embed["dna"], gemm), "model_shape": embed["dna"]["model_shape"]},
            "embed_esm": {**embed_row(embed["esm"], gemm), "model_shape": embed["esm"]["model_shape"]},
            "classify": {**classify, "sequences_per_s": args.reads / classify["wall_s"]},
        },
        "predict": predict,
        "outdir": str(outdir),
    }
    if references:
        reference = whole_run_row([r["wall_s"] for r in references], references, args.reads, tokens, flops, gemm)
        phases = {name: _median_phase(references, name) for name in references[-1]["phases_s"]}
        reference.update(phases_s=phases, model_loads=references[-1]["model_loads"], files=references[-1]["files"])
        results["reference"] = reference
        results["speedup"] = {
            "whole_run": reference["wall_s"] / predict["wall_s"],
            "whole_run_pairs": [r["wall_s"] / p["wall_s"] for p, r in zip(predicts, references)],
            "whole_run_processes": reference["process_s"] / predict["process_s"],
            "embed_dna": _median_phase(references, "embed_dna") / embed["dna"]["embed_s"],
            "embed_esm": _median_phase(references, "embed_esm") / embed["esm"]["embed_s"],
        }
    if args.scale:
        results["scale"] = scale_memory(args, outdir, predicts[0], predict_kwargs)
    return results


def _median_phase(runs: list[dict], phase: str) -> float:
    return statistics.median(run["phases_s"][phase] for run in runs)


def scale_memory(args: argparse.Namespace, outdir: Path, first: dict, predict_kwargs: dict) -> dict:
    """predict on ``--scale`` times the reads: peak memory (main process + largest child) of both runs."""
    count = args.reads * args.scale
    reads = write_read_set(outdir / f"reads_x{args.scale}.fa", count, args.length, args.coding_fraction, args.seed + 1)
    bigger = run_child(
        "predict", outdir, reads=str(reads), outdir=str(outdir / f"predict_x{args.scale}"), **predict_kwargs
    )
    totals = [run["peak_rss_mb"] + run["children_peak_rss_mb"] for run in (first, bigger)]
    return {
        "factor": args.scale,
        "reads": [args.reads, count],
        "wall_s": [first["wall_s"], bigger["wall_s"]],
        "peak_rss_mb": [first["peak_rss_mb"], bigger["peak_rss_mb"]],
        "workers_peak_rss_mb": [first["children_peak_rss_mb"], bigger["children_peak_rss_mb"]],
        "peak_total_mb": totals,
        "ratio": totals[1] / totals[0],
        "target_ratio": 1.5,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = run_benchmark(args)
    print(table(results))
    path = args.json or Path(results["outdir"]) / "benchmark.json"
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
