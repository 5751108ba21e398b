"""The HTML report: self-contained, small and fast over 100 samples, and rendered by a real browser
(headless Chromium from Debian: `apt-get install -y chromium`)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from virnucpro import contracts as c
from virnucpro.report import write_report
from virnucpro.report.html import SECTIONS
from virnucpro.summarize import read_run

from sample_data import engine_summary, make_sample

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install -y chromium)"
)


@pytest.fixture(scope="module")
def run_report(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("report")
    dirs = [make_sample(root / "samples" / f"sample_{n:03d}", n) for n in range(100)]
    engines = [engine_summary(root / f"engine_{n}.json", stage, f"cuda:{n % 2}") for n, stage in
               enumerate(("ESM-2", "ESM-2", "DNABERT-S", "DNABERT-S"))]  # fmt: skip
    run = read_run(dirs)
    start = time.perf_counter()
    path = write_report(run.samples, root / c.RUN_REPORT_HTML, "VirNucPro run report", engines)
    (root / "seconds").write_text(f"{time.perf_counter() - start:.2f}")
    return path


@pytest.mark.slow
def test_report_over_100_samples_is_small_fast_and_self_contained(run_report: Path) -> None:
    text = run_report.read_text()
    seconds = float((run_report.parent / "seconds").read_text())
    assert run_report.stat().st_size < 5_000_000, run_report.stat().st_size
    assert seconds < 30, seconds  # about 3 s on a shared 2-core machine
    for key, name in SECTIONS:
        assert f'<section id="{key}"><h2>{name}</h2>' in text
    assert "<script" not in text  # nothing to run, nothing to fetch
    references = re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', text) + re.findall(r"url\((?!#)([^)]*)\)", text)
    assert all(ref.startswith(("#", "data:")) for ref in references), [r for r in references if not r.startswith("#")]
    assert text.count("<svg") >= 4  # calls, P(virus), length/score, regions
    assert "sample_099" in text and "sample_000" in text
    assert "CUDA out of memory with one sequence" in text and "out of memory with one sequence per batch" in text
    assert "cuda:1" in text and "bf16" in text  # throughput per device and stage
    assert "virus_fraction" in text and "dna_dim" in text  # parameters and models


def test_one_sample_report_names_its_numbers(tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "one", 14, sequences=40)
    path = write_report(read_run([sample]).samples, tmp_path / "report.html", "VirNucPro: one")
    text = path.read_text()
    summary = json.loads((sample / c.SUMMARY_JSON).read_text())
    row = re.search(r"<td>.*?one</span></td>(.*?)</tr>", text).group(1)
    cells = re.findall(r'<td class="n">([^<]*)</td>', row)
    assert cells[:5] == [str(summary["records"]), *(str(summary["calls"][call]) for call in c.CALLS)]
    assert "Read pairs" in text and "Longest regions" in text


def chromium(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               "--host-resolver-rules=MAP * ~NOTFOUND", "--enable-logging=stderr", "--v=0", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


def console_messages(stderr: str) -> list[str]:
    """What the page wrote to its console (errors, exceptions) as Chromium logs it."""
    return re.findall(r":CONSOLE[^\]]*\] (.*)", stderr)


def render(html_path: Path, png_path: Path, height: int = 6000) -> tuple[list[str], str]:
    """Render a page to a PNG; returns its console messages and its DOM after loading."""
    shot = chromium(f"--screenshot={png_path}", f"--window-size=1280,{height}", html_path.as_uri())
    dom = chromium("--dump-dom", html_path.as_uri())
    return console_messages(shot.stderr) + console_messages(dom.stderr), dom.stdout


@pytest.mark.slow
@needs_chromium
def test_chromium_catches_a_console_error(tmp_path: Path) -> None:
    """The check below can fail: a page that throws is seen."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><h1>x</h1><script>console.error("broken"); nope();</script></body></html>')
    messages, dom = render(page, tmp_path / "bad.png", height=300)
    assert any("broken" in m for m in messages) and any("nope is not defined" in m for m in messages)
    assert "<h1>x</h1>" in dom


@pytest.mark.slow
@needs_chromium
def test_report_renders_in_chromium(run_report: Path, tmp_path: Path) -> None:
    from PIL import Image

    png = tmp_path / "report.png"
    messages, dom = render(run_report, png)
    assert messages == []
    for key, name in SECTIONS:
        assert f'id="{key}"' in dom and f"<h2>{name}</h2>" in dom
    assert dom.count("<svg") >= 4
    image = Image.open(png).convert("RGB")
    assert image.size == (1280, 6000)
    colours = image.resize((320, 1500)).getcolors(1 << 16)
    assert colours is not None and len(colours) > 200  # plots and tables drawn, not a blank page


def test_summarize_reports_a_lost_sample_and_writes_multiqc_files(tmp_path: Path) -> None:
    from virnucpro.cli import main

    done = make_sample(tmp_path / "done", 3, sequences=20)
    lost = tmp_path / "lost"  # its classify task never came back
    out = tmp_path / "pipeline_info"
    assert main(["summarize", str(done), str(lost), "--outdir", str(out), "--quiet"]) == c.EXIT_OK
    text = (out / c.RUN_REPORT_HTML).read_text()
    assert '<span class="failed">lost</span>' in text and "no summary.json: the sample was not classified" in text
    mqc = sorted(p.name for p in (out / c.MULTIQC_DIR).iterdir())
    assert mqc == ["done_virnucpro_mqc.tsv", "done_virnucpro_mqc.yaml"]  # no zeros for a sample without results
