"""Static checks of the Nextflow pipeline: what running it (tests/test_pipeline_nextflow.py) and
`nextflow lint` do not check.

The strict-syntax rules the project keeps (``channel.``, no implicit ``it``, ...); every process
has a label, a container, a conda environment, a stub and a versions output; GPU stages carry
``process_gpu``; nextflow_schema.json, nextflow.config and docs/usage.md agree on the params;
every command line calls a bin/ script with options that script accepts, on every path (also
those a CPU-only test run does not take, such as the GPU options).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import reftrace

import nextflow_scan as scan

NF_FILES = scan.pipeline_files(".nf")
CONFIG_FILES = scan.pipeline_files(".config")
SCHEMA = json.loads((scan.REPO_ROOT / "nextflow_schema.json").read_text())
GPU_STAGES = {"embed-dna", "embed-esm"}  # the stages that run a language model


def schema_properties() -> dict[str, dict]:
    return {name: prop for group in SCHEMA["$defs"].values() for name, prop in group["properties"].items()}


def stage_cli():
    """The click group of bin/virnucpro_stage.py, loaded from the script itself."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("virnucpro_stage", scan.BIN_DIR / "virnucpro_stage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.cli


def test_pipeline_files_present() -> None:
    names = {scan.rel(p) for p in NF_FILES + CONFIG_FILES}
    expected = {
        "main.nf",
        "workflows/virnucpro.nf",
        "workflows/training.nf",
        "subworkflows/local/models/main.nf",
        "nextflow.config",
        "conf/base.config",
        "conf/modules.config",
        "conf/test.config",
    } | {f"modules/local/{m}/main.nf" for m in ("prepare", "embed", "predict", "summarize", "fetch_model", "run_status", "multiqc")}
    assert {f"modules/local/{m}/main.nf" for m in ("prepare_labelled", "train", "evaluate")} <= names
    assert expected <= names


# --------------------------------------------------------------------------- syntax


def test_token_offsets_point_into_the_text() -> None:
    """The checker itself: offsets stay exact past comments, whose // and /* */ the tokenizer drops."""
    text = "#!/usr/bin/env nextflow\n/* a\n block */\n// line\ndef f() { return ['.gz'] }\n"
    toks = scan._tokens(text)
    assert all(text[t.offset : t.offset + len(t.value)] == t.value for t in toks)
    assert scan.block_after(text, text.index("def f(")) == "{ return ['.gz'] }"


@pytest.mark.parametrize("path", NF_FILES + CONFIG_FILES, ids=scan.rel)
def test_strict_syntax_rules(path: Path) -> None:
    problems = scan.strict_syntax_problems(path)
    assert not problems, "\n".join(problems)


def test_strict_syntax_checker_finds_violations(tmp_path: Path) -> None:
    script = tmp_path / "bad.nf"
    script.write_text("println 'top level'\nworkflow {\n    Channel.of(1).map { it * 2 }\n}\n")
    config = tmp_path / "bad.config"
    config.write_text("def x = 1\nparams.y = 'a'\nparams.z = \"a\\qb\"\n")
    found = "\n".join(scan.strict_syntax_problems(script) + scan.strict_syntax_problems(config))
    for expected in ("bad.nf:1: top-level statement", "bad.nf:3: use `channel.`", "bad.nf:3: implicit closure", "bad.config:1: config files allow", "bad.config:3: invalid escape"):
        assert expected in found, found


# --------------------------------------------------------------------------- processes


PROCESSES = scan.all_processes()
MODULE_PROCESSES = {
    name: proc for name, proc in PROCESSES.items() if scan.rel(proc.path).startswith("modules/")
}


# A process included under other names runs with these input values (EMBED as EMBED_DNA / EMBED_ESM).
ALIASES = {"EMBED": {"EMBED_DNA": {"kind": "dna"}, "EMBED_ESM": {"kind": "esm"}}}
NO_SOFTWARE = {"RUN_STATUS"}  # reads a status file with the shell: no stage, no versions
TOOLS = {"MULTIQC": "multiqc"}  # runs a packaged tool of the images (containers/environment.yml), not a stage


def stage_calls_of(name: str, ext_args: dict[str, str] | None = None) -> list:
    """The stage calls of a module's process, once per name it is included under."""
    proc = MODULE_PROCESSES[name]
    ext_args = ext_args or {}
    uses = ALIASES.get(name, {name: {}})
    return [call for alias, values in uses.items() for call in scan.stage_calls(proc, ext_args.get(alias, ""), values)]


def test_expected_processes_exist() -> None:
    assert {"MAKE_TEST_MODELS", "FETCH_MODEL", "PREPARE", "EMBED", "PREDICT", "SUMMARIZE", "RUN_STATUS", "MULTIQC"} <= set(MODULE_PROCESSES)
    assert {"PREPARE_LABELLED", "TRAIN", "EVALUATE"} <= set(MODULE_PROCESSES)
    for proc in MODULE_PROCESSES.values():
        assert scan.rel(proc.path) == f"modules/local/{proc.name.lower()}/main.nf", "one process per module, named after it"


@pytest.mark.parametrize("name", sorted(MODULE_PROCESSES))
def test_process_has_label_container_stub_and_versions(name: str) -> None:
    proc = MODULE_PROCESSES[name]
    module = reftrace.Module.from_file(str(proc.path))
    (info,) = [p for p in module.processes if p.name == name]
    where = f"{scan.rel(proc.path)}:{proc.line}"
    assert [label.value for label in info.labels], f"{where}: {name} has no label"
    assert info.containers, f"{where}: {name} has no container"
    assert info.condas, f"{where}: {name} has no conda environment"
    assert proc.gstring("stub") is not None, f"{where}: {name} has no stub section"
    if name in NO_SOFTWARE:
        return
    assert re.search(r"path\s+['\"]versions\.yml['\"]\s*,\s*emit:\s*versions", proc.section_text("output")), (
        f"{where}: {name} does not emit versions.yml as `versions`"
    )
    for section in ("script", "stub"):
        command = "".join(t.value for t in proc.gstring(section).tokens)
        assert "versions.yml" in command and "${task.process}" in command, f"{where}: {section} does not write versions.yml"


@pytest.mark.parametrize("name", sorted(MODULE_PROCESSES))
def test_gpu_label_matches_gpu_stages(name: str) -> None:
    proc = MODULE_PROCESSES[name]
    labels = {label.value for p in reftrace.Module.from_file(str(proc.path)).processes for label in p.labels}
    stages = {call.stage for call in stage_calls_of(name)}
    if stages & GPU_STAGES:
        assert "process_gpu" in labels, f"{name} runs {stages & GPU_STAGES} without label process_gpu"
    else:
        assert "process_gpu" not in labels, f"{name} has label process_gpu but runs no model stage"


def test_containers_are_the_project_images() -> None:
    images = set()
    for proc in MODULE_PROCESSES.values():
        text = proc.section_text("")
        images |= set(re.findall(r"'([\w./-]+:[\w.-]+)'", text))
    version = re.search(r'^version = "([^"]+)"', (scan.REPO_ROOT / "pyproject.toml").read_text(), flags=re.M).group(1)
    assert images == {f"ghcr.io/virnucpro/virnucpro:{version}-cpu", f"ghcr.io/virnucpro/virnucpro:{version}-gpu"}
    readme = (scan.REPO_ROOT / "containers" / "README.md").read_text()
    assert all(image in readme for image in images), "containers/README.md must document every image the modules use"


def test_gpu_retry_policy_matches_the_embed_modules() -> None:
    """The exit code an EMBED task uses to ask for another attempt is one base.config retries."""
    base = (scan.REPO_ROOT / "conf" / "base.config").read_text()
    gpu = scan.block_after(base, base.index("withLabel: 'process_gpu'"))
    assert re.search(r"maxRetries\s*=\s*[1-9]", gpu) and "'ignore'" in gpu and "task.maxRetries" in gpu
    script = "".join(t.value for t in MODULE_PROCESSES["EMBED"].gstring("script").tokens)
    (code,) = set(re.findall(r"\bexit (\d+)\b", script)) - {"1"}  # 1: not data, the run stops
    assert f"[{code}]" in gpu, f"EMBED exits {code} to be retried, but process_gpu's errorStrategy does not retry it"
    assert "task.maxRetries" in MODULE_PROCESSES["EMBED"].preamble("script")
    from virnucpro.errors import MODEL_UNUSABLE  # the engine's words for a model no retry can cure

    assert f"grep -q '{MODEL_UNUSABLE}' embeddings/failed_files.txt" in script, "EMBED: not the engine's words"
    ext = scan.with_name_blocks(scan.REPO_ROOT / "conf" / "modules.config")
    for name, option in (("EMBED_ESM", "--esm-batch-size"), ("EMBED_DNA", "--dna-batch-size")):
        assert option in ext[name] and "task.attempt" in ext[name], f"{name}: the batch size must shrink with task.attempt"


# --------------------------------------------------------------------------- includes


def _included_file(source: Path, module: str) -> Path | None:
    base = (source.parent / module).resolve()
    for candidate in (base.with_name(base.name + ".nf"), base / "main.nf", base):
        if candidate.is_file():
            return candidate
    return None


def test_every_module_is_used() -> None:
    included = {
        item["name"] for path in NF_FILES for inc in reftrace.Module.from_file(str(path)).to_dict()["includes"] for item in inc["items"]
    }
    assert set(MODULE_PROCESSES) <= included


# --------------------------------------------------------------------------- parameters


def test_schema_and_config_params_agree() -> None:
    params = scan.params_block(scan.REPO_ROOT / "nextflow.config")
    properties = schema_properties()
    assert set(params) == set(properties), (
        f"only in nextflow.config: {sorted(set(params) - set(properties))}; only in the schema: {sorted(set(properties) - set(params))}"
    )
    types = {bool: "boolean", int: "integer", float: "number", str: "string"}
    for name, raw in params.items():
        value, prop = scan.literal(raw), properties[name]
        assert prop.get("description"), f"{name}: no description in the schema"
        if value is scan.DYNAMIC:
            assert prop["type"] == "string" and "default" not in prop, f"{name}: computed default must be a string without schema default"
        elif value is None:
            assert "default" not in prop, f"{name}: null in nextflow.config but default {prop['default']!r} in the schema"
        else:
            assert prop["type"] == types[type(value)], f"{name}: {raw} is {types[type(value)]}, schema says {prop['type']}"
            assert prop.get("default") == value and type(prop.get("default")) is type(value), (
                f"{name}: default {raw} in nextflow.config, {prop.get('default')!r} in the schema"
            )
        if "enum" in prop and value not in (None, scan.DYNAMIC):
            assert value in prop["enum"], f"{name}: default {value!r} not among {prop['enum']}"


def test_docs_list_every_param_with_its_default() -> None:
    """docs/usage.md's parameter table has a row for every param of nextflow.config, with its default."""
    params = scan.params_block(scan.REPO_ROOT / "nextflow.config")
    usage = (scan.REPO_ROOT / "docs" / "usage.md").read_text()
    sections = {part.split("\n", 1)[0].strip(): part for part in re.split(r"^## ", usage, flags=re.M)}
    section = sections["Parameters"]
    rows = dict(re.findall(r"^\|\s*`--([a-z_][a-z0-9_]*)`\s*\|\s*([^|]*?)\s*\|", section, flags=re.M))
    assert set(rows) == set(params), (
        f"not in docs/usage.md's table: {sorted(set(params) - set(rows))}; not in nextflow.config: {sorted(set(rows) - set(params))}"
    )
    for name, raw in params.items():
        value, cell = scan.literal(raw), rows[name]
        if value is None or value is scan.DYNAMIC:
            assert cell and not cell.startswith("`"), f"--{name}: no fixed default in nextflow.config ({raw}), the docs say {cell!r}"
        else:
            shown = str(value).lower() if isinstance(value, bool) else str(value)
            assert cell == f"`{shown}`", f"--{name}: default {raw} in nextflow.config, {cell!r} in docs/usage.md"


def test_schema_icons_are_font_awesome_classes() -> None:
    icons = re.findall(r'"fa_icon":\s*"([^"]*)"', (scan.REPO_ROOT / "nextflow_schema.json").read_text())
    assert icons
    bad = [icon for icon in icons if not re.fullmatch(r"fa[srb] fa-[a-z0-9-]+", icon)]
    assert not bad, f"fa_icon values must look like 'fas fa-name': {bad}"


def test_schema_groups_are_all_referenced() -> None:
    refs = {entry["$ref"] for entry in SCHEMA["allOf"]}
    assert refs == {f"#/$defs/{name}" for name in SCHEMA["$defs"]}
    assert set(SCHEMA["$defs"]["input_output_options"]["required"]) == {"input", "outdir"}


def test_every_referenced_param_is_declared() -> None:
    declared = set(scan.params_block(scan.REPO_ROOT / "nextflow.config"))
    for path in NF_FILES + CONFIG_FILES:
        text = path.read_text()
        for match in re.finditer(r"\bparams\.([a-z_][a-z0-9_]*)", text):
            assert match.group(1) in declared, f"{scan.rel(path)}:{scan.line_of(text, match.start())}: params.{match.group(1)} is not declared"
    for config in CONFIG_FILES:
        for name in scan.params_block(config):
            assert name in declared, f"{scan.rel(config)}: sets undeclared param {name}"


def test_test_samplesheet_matches_input_schema() -> None:
    jsonschema = pytest.importorskip("jsonschema")
    import csv

    sheet = scan.REPO_ROOT / "assets" / "samplesheet_test.csv"
    rows = list(csv.DictReader(sheet.open()))
    schema = json.loads((scan.REPO_ROOT / "assets" / "schema_input.json").read_text())
    jsonschema.validate(rows, schema)
    for row in rows:
        assert (sheet.parent / row["fasta"]).is_file(), f"{row['fasta']} is not next to the samplesheet"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"sample": "bad name", "fasta": "x.fa"}], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"sample": "pipeline_info", "fasta": "x.fa"}], schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"sample": "s1", "fasta": "my reads.fa"}], schema)
    # paired reads: fastq_1 with an optional fastq_2, never beside fasta
    jsonschema.validate([{"sample": "p1", "fastq_1": "a_R1.fq.gz", "fastq_2": "a_R2.fq.gz"}, {"sample": "s1", "fastq_1": "b.fastq"}], schema)
    for bad in ({"sample": "p1", "fastq_2": "a_R2.fq.gz"}, {"sample": "p1", "fasta": "c.fa", "fastq_1": "a_R1.fq.gz"},
                {"sample": "p1", "fasta": "c.fa", "fastq_2": "a_R2.fq.gz"}, {"sample": "p1", "fastq_1": "a_R1.fa"}, {"sample": "p1"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate([bad], schema)


def test_compressions_agree_between_reader_main_nf_and_schemas() -> None:
    """The suffixes main.nf strips and the schemas accept are the compressions virnucpro.seqio reads."""
    jsonschema = pytest.importorskip("jsonschema")
    from virnucpro.seqio import COMPRESSION_SUFFIXES

    text = (scan.REPO_ROOT / "main.nf").read_text()
    body = scan.block_after(text, text.index("def compressionSuffixes("))
    assert tuple(re.findall(r"'(\.\w+)'", body)) == COMPRESSION_SUFFIXES
    sheet_schema = json.loads((scan.REPO_ROOT / "assets" / "schema_input.json").read_text())
    input_pattern = re.compile(schema_properties()["input"]["pattern"])
    for suffix in ("", *COMPRESSION_SUFFIXES):
        jsonschema.validate([{"sample": "s1", "fasta": f"reads.fq{suffix}"}], sheet_schema)
        assert input_pattern.search(f"reads.fa{suffix}"), f"--input rejects reads.fa{suffix}"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate([{"sample": "s1", "fasta": "reads.fq.zst"}], sheet_schema)
    assert not input_pattern.search("reads.fa.zst")


def test_samplesheet_reader_rejects_what_the_input_schema_rejects() -> None:
    """main.nf's readSamples checks each row as assets/schema_input.json does, whitespace included
    (the staged file names reach the PREPARE command line unquoted), and names the row."""
    text = (scan.REPO_ROOT / "main.nf").read_text()
    start = text.index("def readSamples(")
    body = scan.block_after(text, start)
    rows = body[body.index("rows.eachWithIndex"):]
    assert 'def where = "${source.name} line ${index + 2}"' in rows
    assert rows.count("samplesheetFile(source, ") == 2, "every file of a row (fasta, fastq_1, fastq_2) is checked"
    checks = scan.block_after(text, text.index("def samplesheetFile("))
    whitespace = re.search(r"if \(path =~ /\\s/\) \{\s*error\(\"\$\{where\}: ", checks)
    assert whitespace, "readSamples does not reject a samplesheet path with whitespace, naming the row"
    assert checks.index("isSequenceFile(path)") < whitespace.start() < checks.index("exists()"), "check the name before the file"
    single = body[: body.index("rows.eachWithIndex")]
    assert re.search(r"if \(source\.name =~ /\\s/\) \{\s*error\(\"--input: ", single), "a single --input file with whitespace passes"


# --------------------------------------------------------------------------- commands


def test_every_command_calls_a_bin_script_with_accepted_options() -> None:
    cli = stage_cli()
    ext_args = scan.with_name_blocks(scan.REPO_ROOT / "conf" / "modules.config")
    checked = set()
    for name in sorted(set(MODULE_PROCESSES) - NO_SOFTWARE - set(TOOLS)):
        calls = stage_calls_of(name, ext_args)
        assert calls, f"{name}: its script calls no bin/ script"
        for call in calls:
            script = scan.BIN_DIR / call.script
            assert script.is_file() and os.access(script, os.X_OK), f"{name}: {call.script} is not an executable in bin/"
            command = cli.commands.get(call.stage)
            assert command is not None, f"{name}: `{call.script} {call.stage}` is not a stage of the CLI"
            accepted = {opt for param in command.params for opt in param.opts + param.secondary_opts}
            assert call.options <= accepted, f"{name}: `{call.stage}` does not accept {sorted(call.options - accepted)}"
            checked.add(call.stage)
    assert {"fetch-model", "prepare", "embed-dna", "embed-esm", "classify", "summarize", "make-test-models"} <= checked
    assert {"prepare-labelled", "fit", "evaluate-embedded"} <= checked


@pytest.mark.parametrize("name", sorted(TOOLS))
def test_every_tool_command_uses_options_the_tool_accepts(name: str) -> None:
    tool = TOOLS[name]
    executable = shutil.which(tool) or str(Path(sys.executable).with_name(tool))
    if not Path(executable).is_file():
        pytest.skip(f"{tool} is not installed (pip install -e '.[test]')")
    shown = subprocess.run([executable, "--help"], capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "300"})
    accepted = set(scan.OPTION.findall(shown.stdout + shown.stderr))
    script = "".join(t.value for t in MODULE_PROCESSES[name].gstring("script").tokens)
    lines = [line for line in script.splitlines() if re.match(rf"\s*{tool}\b", line)]
    assert lines, f"{name}: its script does not run {tool}"
    options = {option for line in lines for option in scan.OPTION.findall(line)}
    if any("${args}" in line for line in lines):
        options |= set(scan.OPTION.findall(scan.with_name_blocks(scan.REPO_ROOT / "conf" / "modules.config").get(name, "")))
    assert "--force" in options and options <= accepted, f"{name}: {tool} does not accept {sorted(options - accepted)}"


def test_option_extraction_sees_ext_args_and_variables() -> None:
    """The checker itself: options behind ${args}, a Groovy def and a shell variable are found."""
    predict = MODULE_PROCESSES["PREDICT"]
    (call,) = scan.stage_calls(predict, "ext.args = { \"--batch-size 4 --no-such-option\" }")
    assert {"--classifier", "--failed", "--batch-size", "--no-such-option", "--outdir"} <= call.options


def test_bin_scripts_are_executable_python() -> None:
    for script in scan.BIN_DIR.iterdir():
        assert script.stat().st_mode & stat.S_IXUSR, f"{script.name} is not executable"
        assert script.read_text().startswith("#!/usr/bin/env python3"), f"{script.name} has no python3 shebang"


@pytest.mark.parametrize("in_image", [False, True])
def test_bin_script_prefers_the_clone_it_lives_in(tmp_path: Path, in_image: bool) -> None:
    """From a plain clone, bin/ runs the package next to it, not another installed version; in the
    project's images (VIRNUCPRO_STAGE_PACKAGE=installed) the image's package, even with the clone mounted."""
    clone = tmp_path / "clone"
    (clone / "bin").mkdir(parents=True)
    (clone / "bin" / "virnucpro_stage.py").write_text((scan.BIN_DIR / "virnucpro_stage.py").read_text())
    (clone / "bin" / "virnucpro_stage.py").chmod(0o755)
    package = clone / "virnucpro"
    subprocess.run(["cp", "-r", str(scan.REPO_ROOT / "virnucpro"), str(package)], check=True)
    init = package / "__init__.py"
    init.write_text(re.sub(r'__version__ = "[^"]+"', '__version__ = "9.9.9-clone"', init.read_text()))
    env = {**os.environ, "PYTHONPATH": str(scan.REPO_ROOT) if in_image else ""}
    env.pop("VIRNUCPRO_STAGE_PACKAGE", None)
    if in_image:
        env["VIRNUCPRO_STAGE_PACKAGE"] = "installed"
    out = subprocess.run([str(clone / "bin" / "virnucpro_stage.py"), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    from virnucpro import __version__

    assert out.stdout.strip().endswith(__version__ if in_image else "9.9.9-clone")


def test_bin_script_alone_uses_the_installed_package(tmp_path: Path) -> None:
    """Copied alone (as in a container or a cloud task), bin/ falls back to the installed package."""
    alone = tmp_path / "bin" / "virnucpro_stage.py"
    alone.parent.mkdir()
    alone.write_text((scan.BIN_DIR / "virnucpro_stage.py").read_text())
    env = {**os.environ, "PYTHONPATH": str(scan.REPO_ROOT)}
    out = subprocess.run([sys.executable, str(alone), "--version"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    from virnucpro import __version__

    assert out.stdout.strip().endswith(__version__)


# --------------------------------------------------------------------------- containers


def _runtime_dependencies() -> set[str]:
    """The package's runtime dependencies, by name, from pyproject.toml."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((scan.REPO_ROOT / "pyproject.toml").read_text())["project"]
    return {re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower() for requirement in project["dependencies"]}


def test_container_recipes_pin_versions() -> None:
    containers = scan.REPO_ROOT / "containers"
    env = (containers / "environment.yml").read_text().split("dependencies:", 1)[1]
    pins = re.findall(r"^\s*-\s*([A-Za-z0-9_.-]+)\s*(==|=)?\s*([^\s#]*)", env, flags=re.M)
    unpinned = [name for name, op, version in pins if name not in {"pip"} and not (op and version)]
    assert not unpinned, f"environment.yml: unpinned {unpinned}"
    for dockerfile in ("Dockerfile.gpu", "Dockerfile.cpu"):
        text = (containers / dockerfile).read_text()
        assert re.search(r"^ARG BASE_IMAGE=\S+:\S+\nFROM \$\{BASE_IMAGE\}$", text, flags=re.M), f"{dockerfile}: base image without a tag"
        assert re.search(r"^ARG TORCH_VERSION=[0-9]", text, flags=re.M) and '"torch==${TORCH_VERSION}"' in text, f"{dockerfile}: torch is not pinned"
        for package in _runtime_dependencies() - {"torch"}:
            assert re.search(rf"{re.escape(package)}==[0-9]", text), f"{dockerfile}: {package} is not pinned"
    pinned_in_env = {name.lower() for name, op, version in pins if op == "=="}
    assert _runtime_dependencies() <= pinned_in_env, f"environment.yml lacks {_runtime_dependencies() - pinned_in_env}"
    assert "cu12" in (containers / "Dockerfile.gpu").read_text(), "the GPU image must use a CUDA 12 torch build"


@pytest.mark.parametrize("home", ["/nonexistent/home", None])
def test_bin_script_gives_a_task_a_writable_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, home: str | None) -> None:
    """A container may start a task with a HOME it cannot write: the caches below it go to the task directory."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("virnucpro_stage_home", scan.BIN_DIR / "virnucpro_stage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    if home is None:
        monkeypatch.delenv("HOME", raising=False)
    else:
        monkeypatch.setenv("HOME", home)
    monkeypatch.setenv("XDG_CACHE_HOME", "/nonexistent/cache")
    module._writable_home()
    assert os.environ["HOME"] == str(tmp_path / ".home")
    assert os.environ["XDG_CACHE_HOME"] == str(tmp_path / ".home" / ".cache")
    assert os.access(os.environ["XDG_CACHE_HOME"], os.W_OK)
    monkeypatch.setenv("HOME", str(tmp_path))
    module._writable_home()
    assert os.environ["HOME"] == str(tmp_path)  # a writable HOME is left alone


def test_bin_script_gives_a_task_its_own_scratch_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A scratch cache set to another user's directory (TRITON_CACHE_DIR in a shared /tmp) goes to the task directory."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("virnucpro_stage_caches", scan.BIN_DIR / "virnucpro_stage.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    blocked = tmp_path / "not-a-directory"
    blocked.write_text("")
    monkeypatch.setenv("TRITON_CACHE_DIR", str(blocked / "triton"))
    monkeypatch.setenv("MPLCONFIGDIR", str(tmp_path / "shared" / "matplotlib"))
    module._writable_home()
    assert os.environ["TRITON_CACHE_DIR"] == str(tmp_path / ".home" / ".cache" / "triton_cache_dir")
    assert os.access(os.environ["TRITON_CACHE_DIR"], os.W_OK)
    assert os.environ["MPLCONFIGDIR"] == str(tmp_path / "shared" / "matplotlib")  # usable: made and kept
