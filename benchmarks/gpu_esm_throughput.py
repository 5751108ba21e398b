"""ESM-2 650M and 3B throughput on GPU, in bf16, through our embedder's forward path.

    python benchmarks/gpu_esm_throughput.py [--models 650M,3B] [--modes padded,packed]
        [--budgets 16384,65536,131072] [--tokens 400000] [--profile 3B] [--json FILE]
    python benchmarks/gpu_esm_throughput.py --scaling [--gpus 0,1,...] [--scaling-model 650M]
    python benchmarks/gpu_esm_throughput.py --dry-run      # the whole script on the CPU, tiny model

Builds each architecture with fair-esm's ``ESM2`` class and random weights (no download), on
the GPU, casts it to bf16 as the product does (:func:`virnucpro.embeddings.esm.cast_model`),
and embeds random proteins of realistic frame lengths (uniform in 50..166 residues: the
frames of 150..500 bp chunks) with :class:`virnucpro.embeddings.esm.EsmEmbedder` for every
token budget and batch layout (``padded``: length-sorted padded batches, SDPA with a key
mask; ``packed``: unpadded, FlashAttention's variable-length kernel); the fastest setting
again with each form of the rotary step (``rotary``: four element-wise kernels or one Triton
kernel), and its profile (``--profile``). Reports tokens/s,
achieved TFLOP/s (FLOPs as in benchmarks/flops.py: 2 x matrix weights per token plus
attention, padding not counted) and two fractions (:mod:`benchmarks.gpu_peaks`): of the
datasheet dense bf16 peak of the board, read from its name and power limit (H200 SXM: 989.4
TFLOP/s, about 175k tokens/s for 3B; ``--peak-tflops`` for a board not in the table), and of
the best bf16 GEMM rate measured on the same GPU at the start of the run. Parity: per-embedding cosine of bf16 against fp32 (our forward in fp32, TF32 off), and
our fp32 forward against fair-esm's own ``ESM2.forward`` (max abs difference), on a sample.

``--scaling`` runs the worker engine (:func:`virnucpro.engine.run_embedding`) over files of
random proteins with a random checkpoint written in fair-esm's format, on 1, 2, ... of the
GPUs given by ``--gpus`` (default: all visible), and reports tokens/s and scaling efficiency.

Needs fair-esm importable (``pip install fair-esm``; on a machine without network carry its
wheel: see docs/performance.md). Random weights: the parity figures say how bf16 rounding
propagates through these shapes, not what the trained 3B gives (check that once with real
weights).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `benchmarks` and `virnucpro` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.flops import esm_shape_from_dims  # noqa: E402
from benchmarks.gpu_peaks import board_peak, fractions, gpu_name_and_power_limit, measure_bf16_gemm  # noqa: E402
from virnucpro.engine import devices  # noqa: E402

ARCHITECTURES = {  # name: (layers, width, heads)
    "650M": (33, 1280, 20),
    "3B": (36, 2560, 40),
    "dry": (2, 64, 4),  # --dry-run only
}
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"


def random_proteins(count: int, low: int, high: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(AMINO_ACIDS, k=rng.randint(low, high))) for _ in range(count)]


def proteins_for_tokens(tokens: int, low: int, high: int, seed: int) -> list[str]:
    """Enough random proteins for about ``tokens`` tokens (BOS/EOS included)."""
    return random_proteins(max(1, tokens // ((low + high) // 2 + 2)), low, high, seed)


def build_esm2(arch: str, device: str, seed: int):
    """fair-esm ESM2 of architecture ``arch`` with random (seeded) weights, fp32, built on ``device``."""
    import esm
    from esm.model.esm2 import ESM2

    layers, width, heads = ARCHITECTURES[arch]
    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    torch.manual_seed(seed)
    with torch.device(device):
        model = ESM2(num_layers=layers, embed_dim=width, attention_heads=heads, alphabet=alphabet, token_dropout=True)
    return model.eval(), alphabet


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _first_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ''}"


def measure(embedder, sequences: list[str], budget: int, device: str) -> dict:
    """Embed ``sequences`` in ``budget``-token batches through the engine's batch loop
    (:func:`virnucpro.engine.embed_file.embedded_batches`); seconds for the whole pass."""
    from virnucpro.engine.embed_file import embedded_batches

    batches = embedder.make_batches(sequences, budget)
    for batch in batches[:2]:  # warm-up: kernels, allocator, rotary tables
        embedder.embed_batch([sequences[i] for i in batch])
    _sync(device)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _batch, vectors in embedded_batches(embedder, sequences, batches, 1):
        if vectors is None:
            raise RuntimeError("out of memory")
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "batches": len(batches),
        "peak_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None,
    }


def parity(model_fp32, alphabet, arch: str, device: str, dtype: torch.dtype, sample: list[str]) -> dict:
    """bf16 vs fp32 cosine per embedding, and our fp32 forward vs fair-esm's forward."""
    from virnucpro.embeddings.esm import EsmEmbedder, cast_model
    from virnucpro.embeddings.precision import cosines

    layers = ARCHITECTURES[arch][0]
    full = EsmEmbedder(model_fp32, alphabet, arch, layers, device=device, dtype=torch.float32, packed=False)
    reference = full.embed_batch(sample)
    _, _, tokens = alphabet.get_batch_converter()([("", s) for s in sample])
    with torch.inference_mode():
        hidden = model_fp32(tokens.to(device), repr_layers=[layers])["representations"][layers].float()
    fair = np.stack([hidden[i, 1 : len(s) + 1].mean(0).cpu().numpy() for i, s in enumerate(sample)])
    half_model = cast_model(copy.deepcopy(model_fp32), device, dtype)
    out = {"sample": len(sample), "ours_fp32_vs_fair_esm_fp32_max_abs": float(np.abs(reference - fair).max())}
    for packed in (False, True):
        try:
            half = EsmEmbedder(half_model, alphabet, arch, layers, device=device, dtype=dtype, packed=packed)
            got = half.embed_batch(sample)
        except Exception as error:  # noqa: BLE001  (report, keep going)
            out["packed" if packed else "padded"] = {"error": _first_line(error)}
            continue
        cosine = cosines(reference, got)
        out["packed" if packed else "padded"] = {"cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean())}
    del half_model
    return out


def sweep(args: argparse.Namespace, device: str, dtype: torch.dtype, on_model=None) -> list[dict]:
    """Throughput of every model x layout x token budget, plus parity per model; ``on_model(results
    so far)`` after each model (main saves them, so a run stopped at its time limit keeps them)."""
    from virnucpro.embeddings.esm import EsmEmbedder, cast_model

    results = []
    for arch in args.models:
        layers, width, _heads = ARCHITECTURES[arch]
        shape = esm_shape_from_dims(layers, width)
        start = time.perf_counter()
        model_fp32, alphabet = build_esm2(arch, device, args.seed)
        model = cast_model(copy.deepcopy(model_fp32), device, dtype)
        entry: dict = {"model": arch, "layers": layers, "width": width, "build_s": time.perf_counter() - start}
        sample = random_proteins(args.parity_sample, args.min_len, args.max_len, args.seed + 1)
        entry["parity"] = parity(model_fp32, alphabet, arch, device, dtype, sample)
        del model_fp32
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        sequences = proteins_for_tokens(args.tokens, args.min_len, args.max_len, args.seed + 2)
        lengths = [len(s) + 2 for s in sequences]
        flops = shape.flops(lengths)
        entry["flops_per_token"] = flops / sum(lengths)
        entry["limit_tokens_per_s"] = args.peak_tflops * 1e12 / entry["flops_per_token"] if args.peak_tflops else None
        entry["runs"] = []
        for mode in args.modes:
            embedder = EsmEmbedder(model, alphabet, arch, layers, device=device, dtype=dtype, packed=mode == "packed")
            for budget in args.budgets:
                run = {"mode": mode, "token_budget": budget, "tokens": sum(lengths), "sequences": len(sequences)}
                try:
                    run.update(measure(embedder, sequences, budget, device))
                except Exception as error:  # noqa: BLE001  (out of memory, missing kernel: report, keep going)
                    run["error"] = _first_line(error)
                    if device.startswith("cuda"):
                        torch.cuda.empty_cache()
                else:
                    run["tokens_per_s"] = run["tokens"] / run["seconds"]
                    run["tflop_per_s"] = flops / run["seconds"] / 1e12
                    run.update(fractions(run["tflop_per_s"], args.peak_tflops, args.gemm_tflops))
                entry["runs"].append(run)
                print(_run_line(arch, run), flush=True)
        entry["rotary"] = measure_rotary(entry, model, alphabet, arch, device, dtype, sequences)
        if arch in args.profile:
            entry["profile"] = profile_best(entry, model, alphabet, arch, device, dtype, sequences)
        del model
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
        results.append(entry)
        if on_model is not None:
            on_model(results)
    return results


def _fastest(entry: dict) -> dict | None:
    runs = [r for r in entry["runs"] if "error" not in r]
    return max(runs, key=lambda r: r["tokens_per_s"]) if runs else None


def measure_rotary(entry: dict, model, alphabet, arch: str, device: str, dtype: torch.dtype, sequences: list[str]) -> dict:
    """The fastest layout and budget with the rotary step as four element-wise kernels and as one
    Triton kernel (:mod:`virnucpro.embeddings.rotary_triton`), interleaved twice; and how closely
    the two forms' embeddings agree (minimum cosine over the first 64 sequences)."""
    from virnucpro.embeddings import rotary_triton
    from virnucpro.embeddings.esm import EsmEmbedder

    best = _fastest(entry)
    if best is None:
        return {"error": "no successful run"}
    if rotary_triton.triton is None or not device.startswith("cuda"):
        return {"error": "the Triton rotary runs on CUDA with Triton installed"}
    embedder = EsmEmbedder(model, alphabet, arch, ARCHITECTURES[arch][0], device=device, dtype=dtype,
                           packed=best["mode"] == "packed")
    forms = {"elementwise": "0", "triton": "1"}
    rates: dict[str, list[float]] = {name: [] for name in forms}
    vectors = {}
    try:
        for _round in range(2):
            for name, flag in forms.items():
                os.environ[rotary_triton.ENV_SWITCH] = flag
                rates[name].append(best["tokens"] / measure(embedder, sequences, best["token_budget"], device)["seconds"])
        for name, flag in forms.items():
            os.environ[rotary_triton.ENV_SWITCH] = flag
            vectors[name] = torch.from_numpy(np.asarray(embedder.embed_batch(sequences[:64]), dtype=np.float64))
    except Exception as error:  # noqa: BLE001  (report, keep going)
        return {"error": _first_line(error)}
    finally:
        os.environ.pop(rotary_triton.ENV_SWITCH, None)
    agreement = torch.nn.functional.cosine_similarity(vectors["elementwise"], vectors["triton"], dim=1)
    out = {"mode": best["mode"], "token_budget": best["token_budget"],
           "tokens_per_s": {name: max(values) for name, values in rates.items()},
           "rounds": rates, "cosine_min": float(agreement.min())}
    print(f"{arch} {best['mode']} budget {best['token_budget']}, rotary: element-wise "
          f"{out['tokens_per_s']['elementwise']:,.0f} tokens/s, Triton {out['tokens_per_s']['triton']:,.0f} tokens/s "
          f"(best of 2 each); embeddings agree to cosine >= {out['cosine_min']:.7f}", flush=True)
    return out


def profile_best(entry: dict, model, alphabet, arch: str, device: str, dtype: torch.dtype, sequences: list[str]) -> dict:
    """Where the time of ``arch``'s fastest layout and budget goes: torch.profiler over a few batches,
    the operators taking the most device time (printed, and returned for the JSON)."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    from virnucpro.embeddings.esm import EsmEmbedder

    best = _fastest(entry)
    if best is None:
        return {"error": "no successful run to profile"}
    embedder = EsmEmbedder(model, alphabet, arch, ARCHITECTURES[arch][0], device=device, dtype=dtype,
                           packed=best["mode"] == "packed")
    batches = embedder.make_batches(sequences, best["token_budget"])[:4]
    embedder.embed_batch([sequences[i] for i in batches[0]])  # warm-up
    _sync(device)
    cuda = device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    start = time.perf_counter()
    with profile(activities=activities) as profiler:
        for batch in batches:
            embedder.embed_batch([sequences[i] for i in batch])
        _sync(device)
    wall_ms = (time.perf_counter() - start) * 1e3
    # On a GPU the kernels themselves (no double counting with the operators that launch them).
    key = "self_device_time_total" if cuda else "self_cpu_time_total"
    events = [e for e in profiler.key_averages() if not cuda or e.device_type == DeviceType.CUDA]
    events.sort(key=lambda e: getattr(e, key, 0) or 0, reverse=True)
    total = sum(getattr(e, key, 0) or 0 for e in events) or 1
    top = [{"op": e.key, "calls": e.count, "ms": (getattr(e, key, 0) or 0) / 1e3,
            "share": (getattr(e, key, 0) or 0) / total} for e in events[:20]]
    print(f"{arch} profile ({best['mode']}, budget {best['token_budget']}, {len(batches)} batches): "
          f"{total / 1e3:.1f} ms of {'kernel' if cuda else 'CPU'} time in {wall_ms:.1f} ms of wall time "
          f"(profiler on)", flush=True)
    for row in top:
        print(f"  {100 * row['share']:5.1f}%  {row['ms']:9.2f} ms  {row['calls']:6d} x  {row['op'][:100]}", flush=True)
    return {"mode": best["mode"], "token_budget": best["token_budget"], "batches": len(batches),
            "busy_ms": total / 1e3, "wall_ms": wall_ms, "top": top}


def _run_line(arch: str, run: dict) -> str:
    if "error" in run:
        return f"{arch:>5} {run['mode']:<7} budget {run['token_budget']:>7}: {run['error']}"
    memory = f", peak {run['peak_memory_gb']:.1f} GiB" if run.get("peak_memory_gb") is not None else ""
    return (
        f"{arch:>5} {run['mode']:<7} budget {run['token_budget']:>7}: {run['tokens_per_s']:>10,.0f} tokens/s "
        f"{run['tflop_per_s']:7.1f} TFLOP/s = {_percent(run.get('fraction_of_datasheet'))} of the datasheet peak, "
        f"{_percent(run.get('fraction_of_gemm'))} of the measured GEMM{memory}"
    )


def _percent(fraction: float | None) -> str:
    return "  n/a" if fraction is None else f"{100 * fraction:5.1f}%"


def write_checkpoint(arch: str, outdir: Path, seed: int) -> Path:
    """A random checkpoint of ``arch`` in fair-esm's on-disk format (virnucpro.testmodels.make_esm)."""
    from virnucpro import testmodels

    layers, width, heads = ARCHITECTURES[arch]
    testmodels.SIZES.setdefault(f"bench{arch}", {"esm": {"layers": layers, "dim": width, "heads": heads}})
    return testmodels.make_esm(outdir, f"bench{arch}", seed)


def scaling(args: argparse.Namespace, device: str) -> dict:
    """The worker engine on 1, 2, ... GPUs: tokens/s and efficiency against one GPU.

    Checkpoint, inputs and outputs go to ``--workdir`` (kept) or to a temporary directory,
    removed afterwards (a random 650M checkpoint alone is 2.6 GB).
    """
    if args.workdir:
        workdir = Path(args.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        return _scaling_in(workdir, args, device)
    with tempfile.TemporaryDirectory(prefix="virnucpro-gpu-scaling-") as temporary:
        return _scaling_in(Path(temporary), args, device)


def _scaling_in(workdir: Path, args: argparse.Namespace, device: str) -> dict:
    from virnucpro.embeddings.esm import EsmSpec
    from virnucpro.engine import run_embedding
    from virnucpro.seqio import write_fasta_record

    checkpoint = write_checkpoint(args.scaling_model, workdir, args.seed)
    files = []
    per_file = args.scaling_tokens // args.scaling_files
    for number in range(args.scaling_files):
        path = workdir / f"proteins_{number:03d}.faa"
        with open(path, "w", encoding="utf-8") as handle:
            proteins = proteins_for_tokens(per_file, args.min_len, args.max_len, args.seed + 10 + number)
            for index, seq in enumerate(proteins):
                write_fasta_record(handle, f"p{number}_{index}", seq)
        files.append(str(path))
    if device.startswith("cuda"):  # counted without initialising CUDA here: the workers use it
        gpus = args.gpus.split(",") if args.gpus else [str(i) for i in range(devices.visible_gpu_count())]
        plans = [",".join(gpus[:n]) for n in range(1, len(gpus) + 1)]
    else:
        plans = [None]
    spec = EsmSpec(str(checkpoint), precision="bf16" if device.startswith("cuda") else "fp32")
    runs = []
    for plan in plans:
        start = time.perf_counter()
        out = workdir / f"out_{plan or 'cpu'}"
        result = run_embedding(files, spec, out, args.scaling_budget, gpus=plan, progress="log")
        wall = time.perf_counter() - start
        stats = result.stats
        run = {
            "gpus": plan or "cpu",
            "workers": sum(d["workers"] for d in stats["devices"].values()),
            "exit_code": result.exit_code,
            "wall_s": wall,
            "tokens": stats["tokens"],
            "tokens_per_s_wall": stats["tokens"] / wall,
            "tokens_per_s_busy": sum(d["tokens_per_s"] for d in stats["devices"].values()),
            "tokens_per_s_after_first_file": sum(d["tokens_per_s_after_first_file"] or 0.0 for d in stats["devices"].values()),
            "devices": stats["devices"],
        }
        runs.append(run)
        print(f"engine on {run['gpus']}: {run['tokens_per_s_busy']:,.0f} tokens/s while busy "
              f"({run['tokens_per_s_after_first_file']:,.0f} after each worker's first file), "
              f"{run['tokens_per_s_wall']:,.0f} tokens/s over the wall (start-up included), "
              f"exit {run['exit_code']}", flush=True)
    for key, name in (("tokens_per_s_busy", "efficiency"), ("tokens_per_s_after_first_file", "efficiency_after_first_file")):
        base = runs[0][key]
        for run in runs:  # against N times one GPU's rate
            run[name] = run[key] / (base * max(1, len(str(run["gpus"]).split(",")))) if base else None
    return {"model": args.scaling_model, "files": len(files), "token_budget": args.scaling_budget, "runs": runs}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="650M,3B", help="comma-separated: 650M, 3B")
    parser.add_argument("--modes", default="padded,packed", help="comma-separated: padded, packed")
    parser.add_argument("--budgets", default="16384,65536,131072", help="token budgets to sweep")
    parser.add_argument("--tokens", type=int, default=400_000, help="tokens per measurement (default 400000)")
    parser.add_argument("--min-len", type=int, default=50)
    parser.add_argument("--max-len", type=int, default=166)
    parser.add_argument("--parity-sample", type=int, default=64)
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 datasheet peak (default: the board's, from "
                        "benchmarks/gpu_peaks.py; give it for a board not in that table)")
    parser.add_argument("--precision", choices=("bf16", "fp16"), default="bf16")
    parser.add_argument("--profile", default="3B", help="comma-separated models whose fastest run is profiled ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scaling", action="store_true", help="run the worker engine on 1..N GPUs instead")
    parser.add_argument("--gpus", help="GPUs for --scaling (default: all visible)")
    parser.add_argument("--scaling-model", default="650M")
    parser.add_argument("--scaling-files", type=int, default=16)
    parser.add_argument("--scaling-tokens", type=int, default=2_000_000)
    parser.add_argument("--scaling-budget", type=int, default=65536)
    parser.add_argument("--workdir", help="for --scaling: checkpoint, inputs and outputs (default: temporary)")
    parser.add_argument("--dry-run", action="store_true", help="tiny model on the CPU: checks the script itself")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    args.models = [m for m in args.models.split(",") if m]
    args.modes = [m for m in args.modes.split(",") if m]
    args.budgets = [int(b) for b in args.budgets.split(",") if b]
    args.profile = [m for m in args.profile.split(",") if m]
    if args.dry_run:
        args.models, args.scaling_model, args.profile = ["dry"], "dry", ["dry"]
        args.tokens, args.parity_sample = min(args.tokens, 3000), min(args.parity_sample, 8)
        args.budgets = [b for b in args.budgets if b <= 4096] or [1024]
        args.scaling_files, args.scaling_tokens, args.scaling_budget = 2, 2000, 1024
    unknown = [m for m in args.models if m not in ARCHITECTURES]
    unknown += [m for m in args.modes if m not in ("padded", "packed")]
    if unknown:
        parser.error(f"unknown model or mode: {', '.join(unknown)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        import esm  # noqa: F401
    except ImportError:
        print("fair-esm is not installed: pip install fair-esm (offline: carry its wheel, see docs/performance.md)")
        return 1
    if not args.dry_run and devices.visible_gpu_count() == 0:
        print("no CUDA device: this script measures GPUs (use --dry-run to check it on the CPU)")
        return 1
    device = "cpu" if args.dry_run else "cuda:0"
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 parity reference is real fp32
    torch.backends.cudnn.allow_tf32 = False
    name, power_limit = gpu_name_and_power_limit() if device.startswith("cuda") else ("cpu (dry run)", None)
    board = board_peak(name, power_limit) if name else None
    if args.peak_tflops is None and board is not None:
        args.peak_tflops = board.dense_bf16_tflops
    results: dict = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": name or (torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"),
        "power_limit_w": power_limit,
        "datasheet": board.as_dict() if board else None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "precision": args.precision,
        "peak_tflops": args.peak_tflops,
        "lengths": [args.min_len, args.max_len],
        "varlen_attention": _has_varlen(),
    }
    peak = f"{args.peak_tflops:.1f} TFLOP/s ({board.source if board else '--peak-tflops'})" if args.peak_tflops else "unknown"
    print(f"{results['device']} (power limit {power_limit} W), torch {results['torch']} (CUDA {results['cuda']}), "
          f"{args.precision}, datasheet dense bf16 peak {peak}, varlen attention: {results['varlen_attention']}", flush=True)
    def save(models: list[dict] | None = None) -> None:
        if models is not None:
            results["models"] = models
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")

    if args.scaling:  # no CUDA in this process before the workers start: no GEMM measurement
        results["scaling"] = scaling(args, device)
    else:
        results["gemm"] = measure_bf16_gemm(device, sizes=(256,) if args.dry_run else (8192, 16384))
        args.gemm_tflops = results["gemm"]["best_tflops"]
        print(f"bf16 GEMM (torch.matmul, square): best {args.gemm_tflops:.1f} TFLOP/s = "
              f"{_percent(args.gemm_tflops / args.peak_tflops if args.peak_tflops else None)} of the datasheet peak", flush=True)
        results["models"] = sweep(args, device, dtype, on_model=save)
        for entry in results["models"]:
            best = entry["best"] = _fastest(entry)
            limit = entry["limit_tokens_per_s"]
            line = f"{entry['model']}: datasheet limit {f'{limit:,.0f}' if limit else 'unknown'} tokens/s; "
            line += f"parity {json.dumps(entry['parity'])}"
            if best:
                line += (f"; best {best['tokens_per_s']:,.0f} tokens/s ({best['mode']}, budget {best['token_budget']}) "
                         f"= {_percent(best['fraction_of_datasheet'])} of the datasheet peak, "
                         f"{_percent(best['fraction_of_gemm'])} of the measured GEMM")
            print(line, flush=True)
    save()
    if args.json:
        print(f"results: {args.json}")
    return 0


def _has_varlen() -> bool:
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    except ImportError:
        return False
    return True


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
