"""The benchmark command runs end to end on a handful of reads and writes every figure (not a timing test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.flops import EncoderShape, esm_shape_from_dims

REPO_ROOT = Path(__file__).resolve().parent.parent

STAGE_FIELDS = {"wall_s", "peak_rss_mb"}
RATE_FIELDS = {"sequences_per_s", "tokens_per_s", "gflop_per_s", "fraction_of_best_gemm", "fraction_of_matmul_gemm"}


@pytest.fixture(scope="module")
def bench(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """One small benchmark run (tiny models, 6 reads, --scale 2): its directory, stdout and JSON."""
    work = tmp_path_factory.mktemp("bench")
    out = work / "bench.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/run.py", "--reads", "6", "--length", "300", "--size", "tiny", "--quick-gemm",
         "--scale", "2", "--outdir", str(work / "work"), "--json", str(out)],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return work / "work", done.stdout, json.loads(out.read_text())


@pytest.mark.slow
def test_benchmark_command_writes_all_fields(bench: tuple[Path, str, dict]) -> None:
    _work, stdout, results = bench
    assert "speed-up, whole run" in stdout and "memory scaling" in stdout
    assert results["settings"]["reads"] == 6 and results["machine"]["cores"] >= 1
    gemm = results["gemm"]
    assert gemm["matmul_gflops"] > 0 and gemm["best_gflops"] == max(gemm["matmul_gflops"], gemm["onednn_gflops"] or 0)
    from virnucpro.embeddings.cpu_linear import onednn_usable

    if onednn_usable():  # the limit the embedders are judged against must have been measured
        assert gemm["onednn_gflops"] > 0
    stages = results["stages"]
    frames = stages["prepare"]["frames"]
    assert stages["prepare"]["sequences"] == 6 and frames >= 6  # coding-like reads keep at least one frame each
    for name in ("embed_dna", "embed_esm"):
        stage = stages[name]
        assert STAGE_FIELDS | RATE_FIELDS | {"load_s", "model_s", "cpu_overhead_s", "tokens"} <= stage.keys()
        assert stage["sequences"] == frames and stage["tokens"] > frames and stage["gflop_per_s"] > 0
        assert 0 < stage["model_s"] <= stage["embed_s"]
    assert stages["classify"]["sequences"] == 6 and stages["classify"]["exit_status"] == 0
    for run in ("predict", "reference"):
        assert STAGE_FIELDS | RATE_FIELDS | {"wall_spread_s", "workers_peak_rss_mb"} <= results[run].keys()
    assert results["predict"]["exit_status"] == 0
    # --precision auto: fp32 unless this CPU has bf16 instructions (then what the parity check allowed)
    allowed = {"fp32", "bf16"} if results["machine"]["cpu_bf16"] else {"fp32"}
    assert {stages["embed_dna"]["precision"], stages["embed_esm"]["precision"]} <= allowed
    assert all(set(stats["precision"]) <= allowed for stats in results["predict"]["engine"].values())
    assert "bf16 instructions: " in stdout and "precision embed_" in stdout
    assert {"embed_dna", "embed_esm"} <= results["predict"]["timings_s"].keys()
    assert results["reference"]["model_loads"] == {"dna": 1, "esm": 1}
    assert {"whole_run", "embed_dna", "embed_esm"} <= results["speedup"].keys()
    scale = results["scale"]
    assert scale["reads"] == [6, 12] and len(scale["peak_total_mb"]) == 2 and scale["ratio"] > 0


@pytest.mark.slow
def test_reference_strategy_predictions_match_predict(bench: tuple[Path, str, dict]) -> None:
    """Same models, same reads: the reference strategy and predict score chunks alike (fp32, 1e-4)."""
    work, _stdout, _results = bench
    ours = _chunk_scores(work / "predict_0" / "prediction_results_highestscore.csv")
    theirs = _chunk_scores(work / "reference_0" / "prediction_results_highestscore.csv")
    assert ours.keys() == theirs.keys() and ours
    for chunk, scores in ours.items():
        assert all(abs(a - b) < 1e-4 for a, b in zip(scores, theirs[chunk])), chunk


def _chunk_scores(path: Path) -> dict[str, tuple[float, float]]:
    lines = path.read_text().splitlines()[1:]
    return {fields[0]: (float(fields[2]), float(fields[3])) for fields in (line.split("\t") for line in lines)}


def test_flop_formula() -> None:
    shape = esm_shape_from_dims(36, 2560)  # ESM-2 3B
    assert abs(shape.flops_per_token() / 1e9 - 5.66) < 0.01
    small = EncoderShape(layers=2, width=4, matrix_params_per_layer=10)
    assert small.flops([3]) == 2 * (2 * 10 * 3 + 4 * 4 * 9)


@pytest.mark.slow
@pytest.mark.parametrize("mode", [[], ["--scaling"]])
def test_gpu_benchmark_script_runs_its_dry_run_on_the_cpu(repo_root: Path, tmp_path: Path, mode: list[str]) -> None:
    """The GPU benchmark only runs for real on a device machine: its --dry-run keeps the script honest here."""
    out = tmp_path / "gpu.json"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_esm_throughput.py", "--dry-run", *mode, "--json", str(out)],
        cwd=repo_root, capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(scratch)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert not [path.name for path in scratch.iterdir() if path.name.startswith("virnucpro-")]  # nothing left behind
    results = json.loads(out.read_text())
    if mode:
        assert results["scaling"] and "tokens/s" in done.stdout
        (run,) = results["scaling"]["runs"]  # two files on one worker: a rate after the first file
        assert run["tokens_per_s_after_first_file"] > 0 and run["efficiency_after_first_file"] == 1.0
    else:
        (model,) = results["models"]
        measured = [run for run in model["runs"] if "error" not in run]
        assert measured and all(run["tokens_per_s"] > 0 for run in measured)
        # no datasheet peak for a CPU; the GEMM rate is measured in the same run, and each figure is given against it
        assert results["datasheet"] is None and all(run["fraction_of_datasheet"] is None for run in measured)
        gemm = results["gemm"]["best_tflops"]
        assert all(run["fraction_of_gemm"] == pytest.approx(run["tflop_per_s"] / gemm) for run in measured)
        assert model["parity"]["ours_fp32_vs_fair_esm_fp32_max_abs"] < 1e-4
        assert 0.99 < model["parity"]["padded"]["cosine_min"] <= 1.0
        assert "CUDA" in model["rotary"]["error"]  # the Triton rotary form is compared on GPUs only
        profiled = model["profile"]  # the fastest run, profiled: operators by time, largest first
        assert profiled["mode"] in ("padded", "packed") and profiled["top"]
        assert [row["ms"] for row in profiled["top"]] == sorted((row["ms"] for row in profiled["top"]), reverse=True)
        assert any("linear" in row["op"] or "mm" in row["op"] for row in profiled["top"])


def test_the_device_check_script_is_valid_bash(repo_root: Path) -> None:
    """It only runs on a device machine (minutes that cannot be spent on a syntax error)."""
    for script in ("device_check.sh", "device_predict.sh"):
        subprocess.run(["bash", "-n", str(repo_root / "tests" / "gpu" / script)], check=True)


@pytest.mark.parametrize(
    "name, power_limit, board, tflops",
    [
        ("NVIDIA H200", 700.0, "H200 SXM", 989.4),
        ("NVIDIA H200", 600.0, "H200 NVL", 835.5),
        ("NVIDIA H200 NVL", None, "H200 NVL", 835.5),
        ("NVIDIA H100 80GB HBM3", 700.0, "H100 SXM", 989.4),
        ("NVIDIA H100 PCIe", 350.0, "H100 PCIe", 756.5),
        ("NVIDIA A100-SXM4-80GB", 400.0, "A100", 312.0),
    ],
)
def test_the_datasheet_peak_follows_the_board_name_and_power_limit(
    name: str, power_limit: float | None, board: str, tflops: float
) -> None:
    from benchmarks.gpu_peaks import board_peak

    peak = board_peak(name, power_limit)
    assert (peak.board, peak.dense_bf16_tflops) == (board, tflops)
    assert "assumed" not in peak.source


def test_an_h200_of_unknown_power_limit_is_taken_for_the_sxm_and_says_so() -> None:
    from benchmarks.gpu_peaks import board_peak, fractions

    peak = board_peak("NVIDIA H200", None)
    assert peak.board == "H200 SXM" and "SXM assumed" in peak.source
    assert board_peak("Some Future GPU", 500.0) is None
    # the shipped ESM-2 3B figure (565 TFLOP/s) against the two limits
    assert fractions(565.0, peak.dense_bf16_tflops, None) == {"fraction_of_datasheet": pytest.approx(0.571, abs=1e-3), "fraction_of_gemm": None}


@pytest.mark.slow
def test_whole_predict_gpu_benchmark_runs_its_dry_run_on_the_cpu(repo_root: Path, tmp_path: Path) -> None:
    """benchmarks/gpu_predict.py measures on a device machine; its --dry-run (tiny models, CPU) keeps it honest here."""
    out = tmp_path / "predict.json"
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu_predict.py", "--dry-run", "--workdir", str(tmp_path / "work"), "--json", str(out)],
        cwd=repo_root, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    results = json.loads(out.read_text())
    reads, contigs = results["runs"]
    assert (reads["set"], reads["sequences"], contigs["set"], contigs["sequences"]) == ("reads", 200, "contigs", 4)
    for run in (reads, contigs):
        assert run["exit_status"] == 0 and run["gpu_busy_fraction"] is None  # no nvidia-smi here
        assert {"embed_dna", "embed_esm"} <= run["stages"].keys()
        assert all(stage["tokens"] > 0 and stage["tokens_per_s"] > 0 for stage in run["stages"].values())
        assert run["other_s"] >= 0 and sum(run["timings_s"].values()) + run["other_s"] == pytest.approx(run["wall_s"])
    assert reads["extrapolated_1m_reads_s"] > reads["wall_s"]
    assert "1M reads extrapolated" in done.stdout


def test_gpu_busy_fraction_is_the_mean_of_nvidia_smi_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in nvidia-smi that prints two samples per GPU and keeps running until stopped."""
    import time

    from benchmarks.gpu_predict import GpuUtilisation

    fake = tmp_path / "nvidia-smi"
    fake.write_text("#!/bin/sh\nprintf '0, 50\\n1, 0\\n0, 100\\n1, 20\\n'\nexec sleep 30\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with GpuUtilisation() as utilisation:
        time.sleep(0.5)
    assert utilisation.busy_fraction() == pytest.approx({"0": 0.75, "1": 0.10})
