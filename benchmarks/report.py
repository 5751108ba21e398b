"""Turn raw stage results into the benchmark's figures, and print them as a table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

_RUN_KEYS = ("wall_s", "process_s", "peak_rss_mb", "children_peak_rss_mb", "timings_s", "phases_s")


def _rate(amount: float | None, seconds: float | None) -> float | None:
    return None if not amount or not seconds else amount / seconds


def spread(values: Sequence[float]) -> dict:
    """min / median / max of repeated measurements."""
    return {
        "n": len(values),
        "min": round(min(values), 3),
        "median": round(statistics.median(values), 3),
        "max": round(max(values), 3),
    }


def embed_row(raw: dict, gemm: dict) -> dict:
    """Rates of one in-process embedding stage, against the machine's GEMM rates."""
    gflops = _rate(raw["flops"], raw["embed_s"])
    model_gflops = _rate(raw["flops"], raw["model_s"])
    return {
        "wall_s": raw["wall_s"],
        "load_s": raw["load_s"],
        "embed_s": raw["embed_s"],
        "model_s": raw["model_s"],
        "cpu_overhead_s": raw["overhead_s"],
        "sequences": raw["sequences"],
        "tokens": raw["tokens"],
        "sequences_per_s": _rate(raw["sequences"], raw["embed_s"]),
        "tokens_per_s": _rate(raw["tokens"], raw["embed_s"]),
        "gflops": raw["flops"] / 1e9,
        "gflop_per_s": gflops and gflops / 1e9,
        "model_gflop_per_s": model_gflops and model_gflops / 1e9,
        "fraction_of_best_gemm": gflops and gflops / 1e9 / gemm["best_gflops"],
        "fraction_of_matmul_gemm": gflops and gflops / 1e9 / gemm["matmul_gflops"],
        "token_budget": raw["token_budget"],
        "precision": raw.get("precision", "fp32"),
        "peak_rss_mb": raw["peak_rss_mb"],
    }


def whole_run_row(walls: list[float], raws: list[dict], reads: int, tokens: int, flops: float, gemm: dict) -> dict:
    """A whole run (predict or the reference strategy) repeated ``len(walls)`` times."""
    wall = statistics.median(walls)
    gflops = flops / wall / 1e9
    return {
        "wall_s": wall,
        "wall_spread_s": spread(walls),
        "process_s": statistics.median(raw["process_s"] for raw in raws),
        "sequences_per_s": reads / wall,
        "tokens_per_s": tokens / wall,
        "gflop_per_s": gflops,
        "fraction_of_best_gemm": gflops / gemm["best_gflops"],
        "fraction_of_matmul_gemm": gflops / gemm["matmul_gflops"],
        "peak_rss_mb": max(raw["peak_rss_mb"] for raw in raws),
        "workers_peak_rss_mb": max(raw["children_peak_rss_mb"] for raw in raws),
        "runs": [{key: raw[key] for key in _RUN_KEYS if key in raw} for raw in raws],
    }


def _fmt(value, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}"


def table(results: dict) -> str:
    """The per-stage table and the ratios, as printed."""
    gemm = results["gemm"]
    lines = [
        f"machine: {results['machine']['cpu']} ({results['machine']['cpu_capability']}), "
        f"{results['machine']['cores']} cores, torch {results['machine']['torch']} "
        f"({results['machine']['torch_threads']} threads), fp32 linears on {results['machine']['linear_backend']}, "
        f"bf16 instructions: {'yes' if results['machine'].get('cpu_bf16') else 'no'}, "
        f"load {results['machine']['load_average_1min']}",
        f"fp32 GEMM: torch.matmul {_fmt(gemm['matmul_gflops'])} GFLOP/s, oneDNN {_fmt(gemm['onednn_gflops'])} "
        f"GFLOP/s -> limit {_fmt(gemm['best_gflops'])} GFLOP/s",
        f"data: {results['settings']['reads']} reads x {results['settings']['length']} bp "
        f"(coding fraction {results['settings']['coding_fraction']}), {results['stages']['prepare']['frames']} kept "
        f"frames; models {results['settings']['size']}",
        "",
        f"{'stage':<22}{'wall s':>9}{'seq/s':>10}{'tokens/s':>11}{'GFLOP/s':>9}{'%best':>7}{'%matmul':>8}{'RSS MB':>8}",
    ]
    rows = [("prepare", results["stages"]["prepare"]), ("embed_dna (in-process)", results["stages"]["embed_dna"]),
            ("embed_esm (in-process)", results["stages"]["embed_esm"]), ("classify", results["stages"]["classify"]),
            ("predict (whole)", results["predict"])]
    if results.get("reference"):
        rows.append(("reference strategy", results["reference"]))
    for name, row in rows:
        best, matmul = row.get("fraction_of_best_gemm"), row.get("fraction_of_matmul_gemm")
        lines.append(
            f"{name:<22}{_fmt(row.get('wall_s'), 2):>9}{_fmt(row.get('sequences_per_s'), 0):>10}"
            f"{_fmt(row.get('tokens_per_s'), 0):>11}{_fmt(row.get('gflop_per_s')):>9}"
            f"{_fmt(best and 100 * best, 0):>7}{_fmt(matmul and 100 * matmul, 0):>8}"
            f"{_fmt(row.get('peak_rss_mb'), 0):>8}"
        )
    for name in ("embed_dna", "embed_esm"):
        stage = results["stages"][name]
        lines.append(
            f"  {name}: load {stage['load_s']:.2f} s, embed {stage['embed_s']:.2f} s of which model "
            f"{stage['model_s']:.2f} s ({_fmt(stage['model_gflop_per_s'])} GFLOP/s), CPU work around the model "
            f"{stage['cpu_overhead_s']:.2f} s; budget {stage['token_budget']} tokens; {stage.get('precision', 'fp32')}"
        )
    predict = results["predict"]
    lines.append(
        f"  predict: {predict['wall_spread_s']['n']} run(s), wall min/median/max {predict['wall_spread_s']['min']:.2f}/"
        f"{predict['wall_spread_s']['median']:.2f}/{predict['wall_spread_s']['max']:.2f} s; stages (medians) "
        + ", ".join(f"{k} {v:.2f}" for k, v in predict["timings_s"].items())
        + f"; child processes peak RSS {_fmt(predict['workers_peak_rss_mb'], 0)} MB; precision "
        + ", ".join(f"{stage} {'/'.join(stats.get('precision', []))}" for stage, stats in predict["engine"].items())
    )
    lines.append(
        f"  predict time not in model calls: {predict['non_model_s']:.2f} s "
        f"({100 * predict['non_model_fraction']:.0f}%)"
    )
    reference = results.get("reference")
    if reference:
        spread_ = reference["wall_spread_s"]
        lines.append(
            f"  reference: wall min/median/max {spread_['min']:.2f}/{spread_['median']:.2f}/{spread_['max']:.2f} s; "
            "phases (medians) "
            + ", ".join(f"{k} {v:.2f}" for k, v in reference["phases_s"].items())
        )
        speed = results["speedup"]
        lines += [
            "",
            f"speed-up, whole run: {speed['whole_run']:.2f}x (median walls; per pair "
            f"{', '.join(f'{x:.2f}' for x in speed['whole_run_pairs'])}); counting process start: "
            f"{speed['whole_run_processes']:.2f}x",
            f"speed-up, DNA embedding: {speed['embed_dna']:.2f}x; ESM-2 embedding: {speed['embed_esm']:.2f}x "
            f"(reference phase / our in-process stage, model loads excluded)",
        ]
    scale = results.get("scale")
    if scale:
        lines += [
            "",
            f"memory scaling: {scale['reads'][0]} reads -> {scale['peak_total_mb'][0]:.0f} MB, "
            f"{scale['reads'][1]} reads -> {scale['peak_total_mb'][1]:.0f} MB (main + largest child process): "
            f"{scale['ratio']:.2f}x for {scale['factor']}x the reads",
        ]
    return "\n".join(lines)
