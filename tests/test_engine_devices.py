"""Device selection and work planning, decided in the parent (no process is spawned here)."""

from __future__ import annotations

from pathlib import Path

import pytest

from virnucpro.engine import devices
from virnucpro.engine.plan import output_stem, plan_items
from virnucpro.errors import InputError

from engine_doubles import write_fasta
from helpers import captured_log


@pytest.fixture(autouse=True)
def fresh_device_messages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts as a new process would: no device message said yet."""
    monkeypatch.setattr(devices, "_said", set())


@pytest.fixture()
def four_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend torch has CUDA and the machine has four GPUs (all visible unless the env says otherwise)."""
    monkeypatch.setattr(devices, "cuda_built", lambda: True)
    monkeypatch.setattr(devices, "physical_gpu_count", lambda: 4)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_no_gpu_means_one_cpu_worker_and_one_log_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 0)
    with captured_log(caplog):
        slots = devices.plan_workers(None, None)
    assert [(s.device, s.env) for s in slots] == [("cpu", {})]
    assert [r.getMessage() for r in caplog.records] == ["no CUDA GPU visible: running on the CPU"]


def test_the_cpu_fallback_is_said_once_per_process(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """predict plans workers for the DNA and the ESM-2 stage: one line, not one per stage."""
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 0)
    monkeypatch.setattr(devices, "cuda_built", lambda: False)
    with captured_log(caplog):
        for _stage in ("DNABERT-S", "ESM-2"):
            devices.plan_workers(None, None)
            devices.plan_workers("0", None)
    assert [r.getMessage() for r in caplog.records] == [
        "no CUDA GPU visible: running on the CPU",
        "no CUDA support in this torch build: --gpus 0 ignored, running on the CPU",
    ]


def test_cpu_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 0)
    monkeypatch.setattr(devices, "_cpu_count", lambda: 8)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    slots = devices.plan_workers(None, 2)
    expected = ("cpu", 4, {"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "4"})
    assert [(s.device, s.threads, s.env) for s in slots] == [expected] * 2
    assert [(s.threads, s.env) for s in devices.plan_workers(None, 2, limit=1)] == [(None, {})]  # one file: one worker


def test_default_is_one_worker_per_visible_gpu(four_gpus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,1")
    slots = devices.plan_workers(None, None)
    seen = [(s.device, s.env["CUDA_VISIBLE_DEVICES"], s.label) for s in slots]
    assert seen == [("cuda:0", "3", "gpu 3"), ("cuda:0", "1", "gpu 1")]


def test_gpus_overrides_cuda_visible_devices_and_workers_cycle_over_them(
    four_gpus: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in devices.plan_workers("0,2", None)] == ["0", "2"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in devices.plan_workers("0, 2", 3)] == ["0", "2", "0"]
    assert [s.env["CUDA_VISIBLE_DEVICES"] for s in devices.plan_workers("0,2", None, limit=1)] == ["0"]


@pytest.mark.parametrize(
    ("gpus", "message"),
    [
        ("0,x", "--gpus '0,x': expected comma-separated GPU indices such as 0,2"),
        ("", "--gpus '': expected comma-separated GPU indices such as 0,2"),
        ("1,1", "--gpus '1,1': a GPU is listed twice"),
        ("2,7", "--gpus 2,7: no GPU 7 on this machine (4 found)"),
    ],
)
def test_bad_gpus_is_a_one_line_error(four_gpus: None, gpus: str, message: str) -> None:
    with pytest.raises(InputError) as error:
        devices.plan_workers(gpus, None)
    assert str(error.value) == message


def test_gpus_without_cuda_falls_back_to_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "cuda_built", lambda: False)
    assert [s.device for s in devices.plan_workers("0,1", None)] == ["cpu"]


def test_output_stem() -> None:
    assert output_stem("a/b/shard_00001.faa") == "shard_00001"
    assert output_stem("x.fa.gz") == output_stem("x.fa.bz2") == output_stem("x.faa.xz") == "x"
    assert output_stem("noext") == "noext"


def test_items_are_largest_first_and_clashing_stems_are_refused(tmp_path: Path) -> None:
    small = write_fasta(tmp_path / "small.faa", [("a", "M" * 10)])
    big = write_fasta(tmp_path / "big.faa", [("a", "M" * 50), ("b", "M" * 50)])
    middle = write_fasta(tmp_path / "middle.faa", [("a", "M" * 30)])
    items = plan_items([str(small), str(big), str(middle), str(tmp_path / "missing.faa")], tmp_path / "out")
    assert [(Path(i.path).name, i.cost, i.index) for i in items] == [
        ("big.faa", 104, 1), ("middle.faa", 32, 2), ("small.faa", 12, 0), ("missing.faa", 0, 3)
    ]
    assert items[0].out_path == tmp_path / "out" / "big.npz"
    (tmp_path / "sub").mkdir()
    clash = write_fasta(tmp_path / "sub" / "small.fa", [("a", "M")])
    with pytest.raises(InputError, match="same output name small.npz"):
        plan_items([str(small), str(clash)], tmp_path / "out")


def test_fewer_workers_than_asked_is_said_with_the_reason(
    four_gpus: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 4)
    with captured_log(caplog):
        assert len(devices.plan_workers(None, None, limit=2)) == 2
        assert len(devices.plan_workers(None, None, limit=4)) == 4  # no reduction: nothing said
    assert [r.getMessage() for r in caplog.records] == [
        "2 worker(s), not 4: never more workers than files (2)"
    ]


def test_gpus_asked_for_on_a_torch_without_cuda_is_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    monkeypatch.setattr(devices, "cuda_built", lambda: False)
    with captured_log(caplog):
        assert devices.select_gpus("0") == []
    [record] = caplog.records
    assert record.levelno == logging.WARNING and "--gpus 0 ignored, running on the CPU" in record.getMessage()


def test_gpu_counts_come_from_nvml_without_a_cuda_context(monkeypatch: pytest.MonkeyPatch) -> None:
    """The parent counts GPUs through NVML (torch's private helpers), falling back to the runtime's
    count; nothing here may initialise CUDA (the workers must be spawned first)."""
    import torch

    monkeypatch.setattr(torch.version, "cuda", None)
    monkeypatch.setattr(torch.version, "hip", None, raising=False)
    assert (devices.visible_gpu_count(), devices.physical_gpu_count()) == (0, 0)  # a CPU build

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "_device_count_nvml", lambda: 3)
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", lambda: 8)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: pytest.fail("the runtime was asked though NVML answered"))
    assert (devices.visible_gpu_count(), devices.physical_gpu_count()) == (3, 8)

    def no_nvml() -> int:
        raise OSError("libnvidia-ml.so.1: cannot open shared object file")

    monkeypatch.setattr(torch.cuda, "_device_count_nvml", no_nvml)
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", no_nvml)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert (devices.visible_gpu_count(), devices.physical_gpu_count()) == (2, None)  # None: do not check --gpus
    monkeypatch.setattr(torch.cuda, "_raw_device_count_nvml", lambda: -1)  # NVML failed to initialise
    assert devices.physical_gpu_count() is None
    monkeypatch.delattr(torch.cuda, "_raw_device_count_nvml")
    assert devices.physical_gpu_count() is None


def test_cpu_workers_are_capped_at_the_cores_and_it_is_said(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """15 CPU workers on 2 cores only cost memory (4.9 GB, 70 s where one worker took 6 s)."""
    monkeypatch.setattr(devices, "visible_gpu_count", lambda: 0)
    monkeypatch.setattr(devices, "_cpu_count", lambda: 2)
    with captured_log(caplog):
        slots = devices.plan_workers(None, 15, limit=15)
    assert [s.device for s in slots] == ["cpu", "cpu"]
    assert [r.getMessage() for r in caplog.records][-1] == "2 worker(s), not 15: never more CPU workers than cores (2)"
    assert len(devices.plan_workers(None, 2, limit=15)) == 2  # within the cores: as asked
