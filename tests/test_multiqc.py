"""MultiQC picks up our files: the real `multiqc` on what `virnucpro summarize` writes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.cli import main
from virnucpro.multiqc import GENERAL_STATS_ID, PLOT_ID, SECTION_ID, file_names

from sample_data import make_sample

pytestmark = pytest.mark.slow


def read_table(path: Path) -> dict[str, dict[str, str]]:
    header, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return {row[0]: dict(zip(header[1:], row[1:])) for row in rows}


@pytest.mark.skipif(shutil.which("multiqc") is None and not Path(sys.executable).with_name("multiqc").exists(),
                    reason="multiqc is not installed (pip install -e '.[test]')")  # fmt: skip
def test_multiqc_shows_our_bar_plot_and_general_stats(tmp_path: Path) -> None:
    samples = [make_sample(tmp_path / "results" / name, seed, 60) for seed, name in enumerate(("s1", "s2", "s3"), 7)]
    info = tmp_path / "results" / "pipeline_info"
    assert main(["summarize", *map(str, samples), "--outdir", str(info), "--quiet"]) in (0, 1)
    assert sorted(p.name for p in (info / c.MULTIQC_DIR).iterdir()) == sorted(
        name for sample in ("s1", "s2", "s3") for name in file_names(sample)
    )
    out = tmp_path / "multiqc"
    command = [str(Path(sys.executable).with_name("multiqc")), str(info / c.MULTIQC_DIR), "-o", str(out), "-f",
               "--no-version-check", "--no-ai"]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    data = out / "multiqc_data"
    calls = read_table(data / f"multiqc_{PLOT_ID}.txt")
    general = read_table(data / "multiqc_general_stats.txt")
    for sample in samples:
        summary = json.loads((sample / c.SUMMARY_JSON).read_text())
        expected = summary["calls"]
        assert {call: int(float(calls[sample.name][call])) for call in c.CALLS} == expected
        stats = {key.split("-", 1)[1]: float(value) for key, value in general[sample.name].items() if value}
        assert stats["virus"] == expected[c.CALL_VIRUS] and stats["failed"] == expected[c.CALL_FAILED]
        assert stats["virus_percent"] == pytest.approx(100 * expected[c.CALL_VIRUS] / summary["records"], abs=0.01)
        assert stats["regions"] == summary["regions"]["count"]
    assert all(key.startswith(f"custom_content_{GENERAL_STATS_ID}-") for key in general["s1"])
    report = (out / "multiqc_report.html").read_text()
    assert f'id="{SECTION_ID}"' in report and f'id="{PLOT_ID}"' in report and ">VirNucPro<" in report
