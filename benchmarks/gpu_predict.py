"""The whole ``virnucpro predict`` on a GPU at real model sizes, with random weights.

    python benchmarks/gpu_predict.py [--esm 3B] [--reads 100000] [--contigs 20000]
        [--contig-lengths 1000,50000] [--precision auto] [--workdir DIR] [--json FILE]
    python benchmarks/gpu_predict.py --dry-run      # the whole script on the CPU, tiny models

Writes random models in the real on-disk formats and shapes: ESM-2 650M or 3B (fair-esm's
checkpoint format), a DNABERT-S-sized DNABERT-2 (12 layers, 768 wide, 3,072 inner, a BPE
tokenizer of 4,096 tokens like DNABERT-S's) and the reference MLP for their widths; two read
sets (``--reads`` reads of 300 bp, half coding-like and half random; ``--contigs`` contigs of
``--contig-lengths`` bp), and runs ``predict`` on each as the command does (every visible GPU,
``--precision``). For each set it reports the wall time of each stage, reads/s, tokens/s of each
embedding stage, the GPU busy fraction (nvidia-smi's utilisation sampled every 200 ms over the
run: the time the GPU waits on parsing, translation, tokenisation, writing, the DNA stage and
worker start-up is the rest), the workers' start-up (first file) time, and the wall time of 1M
reads extrapolated from the read set (per-read rate; start-up counted once).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `virnucpro` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DNABERT_S_SHAPE = {"layers": 12, "hidden": 768, "heads": 12, "intermediate": 3072, "vocab": 4096}
EXTRAPOLATE_TO_READS = 1_000_000


def write_models(workdir: Path, esm_arch: str, dry_run: bool, seed: int) -> dict[str, str]:
    """ESM-2, DNA model and classifier in their real formats under ``workdir/models``."""
    from benchmarks.gpu_esm_throughput import ARCHITECTURES, write_checkpoint
    from virnucpro import testmodels
    from virnucpro.classifier.model import ClassifierMeta

    outdir = workdir / "models"
    if dry_run:
        made = testmodels.make_test_models(outdir, "tiny", seed)
        return {"esm": str(made.esm), "dna": str(made.dna), "classifier": str(made.classifier)}
    esm = write_checkpoint(esm_arch, outdir, seed)
    dna = testmodels.make_dna(outdir, seed=seed, shape=DNABERT_S_SHAPE)
    layers, esm_dim, _heads = ARCHITECTURES[esm_arch]
    meta = ClassifierMeta(
        dna_dim=DNABERT_S_SHAPE["hidden"], esm_dim=esm_dim, chunk_length=300, dna_model=str(dna), esm_model=str(esm),
        esm_layer=layers, source=f"benchmarks/gpu_predict.py (random, ESM-2 {esm_arch}, seed {seed})",
    )
    classifier = testmodels.make_classifier(outdir / "classifier.pt", DNABERT_S_SHAPE["hidden"], esm_dim, meta, seed)
    return {"esm": str(esm), "dna": str(dna), "classifier": str(classifier)}


def write_read_sets(workdir: Path, reads: int, contigs: int, contig_lengths: tuple[int, int], seed: int) -> dict[str, Path]:
    """The two inputs: short reads (half coding-like) and long contigs."""
    from virnucpro.seqio import write_fasta_record
    from virnucpro.synthetic import synthetic_reads

    sets = {"reads": (reads, 300, seed), "contigs": (contigs, contig_lengths, seed + 1)}
    paths = {}
    for name, (count, length, set_seed) in sets.items():
        if not count:
            continue
        path = paths[name] = workdir / f"{name}.fa"
        with open(path, "w", encoding="utf-8") as handle:
            for read_id, seq in synthetic_reads(count, length, coding_fraction=0.5, seed=set_seed, prefix=name[:-1]):
                write_fasta_record(handle, read_id, seq)
    return paths


class GpuUtilisation:
    """nvidia-smi's GPU utilisation sampled in the background; empty where nvidia-smi is missing."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.interval_ms, self.process, self.samples = interval_ms, None, {}

    def __enter__(self) -> GpuUtilisation:
        query = ["nvidia-smi", "--query-gpu=index,utilization.gpu", "--format=csv,noheader,nounits", f"-lms={self.interval_ms}"]
        try:
            self.process = subprocess.Popen(query, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        except OSError:
            self.process = None
        return self

    def __exit__(self, *_exc: object) -> None:
        if self.process is None:
            return
        self.process.terminate()
        output, _ = self.process.communicate(timeout=10)
        for line in output.splitlines():
            index, _, value = line.partition(",")
            try:
                self.samples.setdefault(index.strip(), []).append(float(value) / 100)
            except ValueError:
                continue

    def busy_fraction(self) -> dict[str, float] | None:
        """Mean utilisation per GPU index, as a fraction; None when nothing was sampled."""
        return {index: sum(values) / len(values) for index, values in self.samples.items()} or None


def run_set(name: str, path: Path, models: dict[str, str], outdir: Path, precision: str, sequences: int) -> dict:
    """``predict`` on one read set; its figures from the run's summary.json."""
    from virnucpro.embeddings.dna import DnaSpec
    from virnucpro.embeddings.esm import EsmSpec
    from virnucpro.predict import PredictOptions, run_predict

    options = PredictOptions(
        chunk_length=300, classifier=models["classifier"], esm=EsmSpec(models["esm"], precision=precision),
        dna=DnaSpec(models["dna"], precision=precision), progress="log",
    )
    with GpuUtilisation() as utilisation:
        start = time.perf_counter()
        code = run_predict([str(path)], outdir, options)
        wall = time.perf_counter() - start
    summary = json.loads((outdir / "summary.json").read_text(encoding="utf-8"))
    stages = {}
    for stage, stats in summary.get("engine", {}).items():
        devices = stats.get("devices", {}).values()
        stage_s = summary.get("timings_s", {}).get(stage) or stats.get("wall_s")
        stages[stage] = {
            "wall_s": stage_s,
            "tokens": stats.get("tokens"),
            "tokens_per_s": stats["tokens"] / stage_s if stage_s and stats.get("tokens") else None,
            "first_file_s": max((d.get("first_file_s") or 0.0 for d in devices), default=None),
            "precision": sorted({str(d.get("precision")) for d in devices}),
        }
    return {
        "set": name, "sequences": sequences, "exit_status": code, "wall_s": wall,
        "sequences_per_s": sequences / wall, "timings_s": summary.get("timings_s", {}), "stages": stages,
        "other_s": wall - sum(summary.get("timings_s", {}).values()),  # the report, the command's own start
        "gpu_busy_fraction": utilisation.busy_fraction(),
    }


def extrapolate(run: dict, target: int) -> float:
    """Wall seconds for ``target`` reads: the per-read rate without the workers' start-up, plus one start-up."""
    start_up = sum(stage["first_file_s"] or 0.0 for stage in run["stages"].values())
    return start_up + (run["wall_s"] - start_up) * target / run["sequences"]


def report_lines(run: dict) -> list[str]:
    """What is printed for one read set."""
    busy = run["gpu_busy_fraction"]
    lines = [
        f"{run['set']}: {run['sequences']:,} sequences in {run['wall_s']:.1f} s = {run['sequences_per_s']:,.0f}/s, "
        f"exit {run['exit_status']}, GPU busy "
        + (", ".join(f"GPU {i} {100 * f:.0f}%" for i, f in busy.items()) if busy else "n/a (no nvidia-smi)"),
        "  stages: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in run["timings_s"].items())
        + f"; outside the stages (report, start) {run['other_s']:.1f} s",
    ]
    for name, stage in run["stages"].items():
        rate = f"{stage['tokens_per_s']:,.0f} tokens/s" if stage["tokens_per_s"] else "-"
        lines.append(f"  {name}: {stage['tokens'] or 0:,} tokens, {rate}, start-up (first file) "
                     f"{stage['first_file_s'] or 0:.1f} s, {'/'.join(stage['precision'])}")
    if "extrapolated_1m_reads_s" in run:
        lines.append(f"  1M reads extrapolated: {run['extrapolated_1m_reads_s'] / 60:.1f} min")
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--esm", choices=("650M", "3B"), default="3B", help="ESM-2 architecture (default 3B)")
    parser.add_argument("--reads", type=int, default=100_000, help="300 bp reads (default 100000; 0: none)")
    parser.add_argument("--contigs", type=int, default=20_000, help="contigs (default 20000; 0: none)")
    parser.add_argument("--contig-lengths", default="1000,50000", help="min,max contig length in bp")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, help="models, inputs and outputs (default: temporary, removed)")
    parser.add_argument("--dry-run", action="store_true", help="tiny models and a few reads on the CPU")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    low, _, high = args.contig_lengths.partition(",")
    args.contig_lengths = (int(low), int(high or low))
    if args.dry_run:
        args.reads, args.contigs, args.contig_lengths = min(args.reads, 200), min(args.contigs, 4), (1000, 3000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from virnucpro.engine import devices

    if not args.dry_run and devices.visible_gpu_count() == 0:
        print("no CUDA device: this script measures GPUs (use --dry-run to check it on the CPU)")
        return 1
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
        return _run_in(args.workdir, args)
    with tempfile.TemporaryDirectory(prefix="virnucpro-gpu-predict-") as temporary:
        return _run_in(Path(temporary), args)


def _run_in(workdir: Path, args: argparse.Namespace) -> int:
    from benchmarks.gpu_peaks import gpu_name_and_power_limit

    name, power_limit = gpu_name_and_power_limit() if not args.dry_run else ("cpu (dry run)", None)
    start = time.perf_counter()
    models = write_models(workdir, args.esm, args.dry_run, args.seed)
    inputs = write_read_sets(workdir, args.reads, args.contigs, args.contig_lengths, args.seed)
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": name, "power_limit_w": power_limit, "esm": "tiny" if args.dry_run else args.esm,
        "dna": "tiny" if args.dry_run else DNABERT_S_SHAPE, "precision": args.precision,
        "setup_s": time.perf_counter() - start, "runs": [],
    }
    print(f"{name}: ESM-2 {results['esm']}, DNA {results['dna']}, precision {args.precision}; "
          f"models and inputs written in {results['setup_s']:.0f} s", flush=True)
    counts = {"reads": args.reads, "contigs": args.contigs}
    for set_name, path in inputs.items():
        run = run_set(set_name, path, models, workdir / f"predict_{set_name}", args.precision, counts[set_name])
        if set_name == "reads":
            run["extrapolated_1m_reads_s"] = extrapolate(run, EXTRAPOLATE_TO_READS)
        results["runs"].append(run)
        print("\n".join(report_lines(run)), flush=True)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0 if all(run["exit_status"] == 0 for run in results["runs"]) else 1


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
