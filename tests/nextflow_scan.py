"""Read the Nextflow pipeline's text: tokens, processes, scripts, configs (tests/test_nextflow_static.py).

Tokens come from PyPI ``groovy-parser``'s tokenizer (the strict-syntax rules the project keeps
are checked on them), processes and includes from ``reftrace``. Whether the files parse and run
is checked by running them (tests/test_pipeline_nextflow.py).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from pygments.token import Token, _TokenType

REPO_ROOT = Path(__file__).resolve().parent.parent
BIN_DIR = REPO_ROOT / "bin"
SECTION_LABELS = ("input:", "output:", "when:", "script:", "shell:", "exec:", "stub:")
# Escapes a Nextflow string may contain (reference: Nextflow syntax, "String").
ALLOWED_ESCAPES = re.compile(r"\\([btnfrs\"'\\$\n/]|u[0-9a-fA-F]{4}|[0-7]{1,3})")
OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")
_SKIP_DIRS = {"work", "results", "results_test", "node_modules", "tests", "build", "dist"}


@dataclass(frozen=True)
class Tok:
    """One groovy-parser token with its offset in the file."""

    kind: _TokenType
    value: str
    offset: int


def pipeline_files(*suffixes: str) -> list[Path]:
    """Every pipeline file with one of ``suffixes`` (hidden, work and result folders excluded)."""
    found = []
    for path in sorted(REPO_ROOT.rglob("*")):
        parts = path.relative_to(REPO_ROOT).parts
        if any(part.startswith(".") or part in _SKIP_DIRS or part.endswith(".egg-info") for part in parts[:-1]):
            continue
        if path.is_file() and path.name.endswith(suffixes):
            found.append(path)
    return found


def rel(path: Path) -> str:
    """``path`` relative to the repository root (its name outside the repository), for messages."""
    resolved = Path(path).resolve()
    return str(resolved.relative_to(REPO_ROOT)) if resolved.is_relative_to(REPO_ROOT) else resolved.name


def line_of(text: str, offset: int) -> int:
    """1-based line number of ``offset`` in ``text``."""
    return text.count("\n", 0, offset) + 1


@lru_cache(maxsize=None)
def _tokens(text: str) -> tuple[Tok, ...]:
    from groovy_parser.tokenizer import GroovyRestrictedTokenizer

    tokens, offset = [], 0
    for kind, value in GroovyRestrictedTokenizer().get_tokens(text):
        start = text.find(value, offset)
        # The tokenizer gives comments without their // or /* */: skip those, nothing else.
        if start < 0 or set(text[offset:start]) - set("/*"):
            raise ValueError(f"tokens out of step with the text at offset {offset}: {value[:40]!r}")
        tokens.append(Tok(kind, value, start))
        offset = start + len(value)
    return tuple(tokens)


def tokens(path: Path) -> tuple[Tok, ...]:
    """The tokens of a file (comments and whitespace included, offsets into its text)."""
    return _tokens(Path(path).read_text())


# --------------------------------------------------------------------------- processes


@dataclass
class GString:
    """A string literal of a script section: its tokens and its text with the quotes."""

    tokens: list[Tok]
    start: int  # offset of the opening quotes

    def _segments(self, tokens: list[Tok]) -> Iterator[tuple[str, Any]]:
        """``("expr", text)`` for each ``${...}`` expression, ``("tok", token)`` for the rest."""
        depth, current = 0, []
        for tok in tokens:
            if tok.kind is Token.Literal.String.GString.ClosureBegin:
                depth += 1
                if depth == 1:
                    current = []
                    continue
            elif tok.kind is Token.Literal.String.GString.ClosureEnd:
                depth -= 1
                if depth == 0:
                    yield "expr", "".join(current).strip()
                    continue
            if depth:
                current.append(tok.value)
            else:
                yield "tok", tok

    def expressions(self) -> list[str]:
        """The ``${...}`` expressions, in order (escaped ``\\$`` excluded)."""
        return [text for kind, text in self._segments(self.tokens) if kind == "expr"]

    def bare_interpolations(self) -> list[str]:
        """``$name`` interpolations without braces (a forgotten ``\\$`` for a shell variable)."""
        return [t.value for t in self.tokens if t.kind is Token.Literal.String.GString.GStringPath]

    def escapes(self) -> list[str]:
        """Every backslash escape in the string."""
        return [t.value for t in self.tokens if t.kind is Token.Literal.String.Escape]

    def render(self, values: dict[str, object]) -> str:
        """The string Nextflow would build, given a value for each ``${...}`` expression.

        Raises KeyError naming every expression without a value. The common indentation is
        removed, as Nextflow does for a task script.
        """
        missing = [e for e in self.expressions() if e not in values]
        if missing:
            raise KeyError(f"no value for {missing}")
        parts = []
        for kind, item in self._segments(self.tokens[1:-1]):
            if kind == "expr":
                parts.append(str(values[item]))
            elif item.kind is Token.Literal.String.Escape:
                parts.append(_unescape(item.value))
            else:
                parts.append(item.value)
        return textwrap.dedent("".join(parts)).strip("\n") + "\n"


def _unescape(escape: str) -> str:
    simple = {"\\$": "$", "\\\\": "\\", '\\"': '"', "\\'": "'", "\\n": "\n", "\\t": "\t", "\\/": "/"}
    return simple.get(escape, escape)


_OUTPUT_PATH = re.compile(r"""\bpath\s*\(?\s*(['"])(.+?)\1([^)]*)""")


@dataclass(frozen=True)
class OutputPath:
    """One declared output: its glob (may hold ``${...}``) and whether it may match nothing."""

    pattern: str
    may_be_absent: bool

    def glob(self, values: dict[str, object]) -> str:
        """The pattern with ``${name}`` / ``${a.b}`` replaced from ``values``."""
        return re.sub(r"\$\{([\w.]+)\}", lambda m: str(values[m.group(1)]), self.pattern)


@dataclass
class Process:
    """One ``process`` definition, cut into its sections."""

    name: str
    path: Path
    line: int
    sections: dict[str, list[Tok]] = field(default_factory=dict)  # '' = directives
    text: str = ""

    def section_text(self, label: str) -> str:
        """The raw text of a section ('' for the directives)."""
        toks = self.sections.get(label, [])
        return "".join(t.value for t in toks)

    def gstring(self, label: str) -> GString | None:
        """The last string literal of a section (the command of script: and stub:)."""
        toks = self.sections.get(label, [])
        ends = [i for i, t in enumerate(toks) if t.kind is Token.Literal.String.GString.GStringEnd]
        if not ends:
            return None
        end = ends[-1]
        begin = max(i for i, t in enumerate(toks[:end]) if t.kind is Token.Literal.String.GString.GStringBegin and t.value == toks[end].value)
        return GString(list(toks[begin : end + 1]), toks[begin].offset)

    def output_paths(self) -> list[OutputPath]:
        """Every ``path(...)`` the ``output:`` section declares, in order."""
        declared = []
        for line in self.section_text("output").splitlines():
            optional = bool(re.search(r"\boptional:\s*true\b", line))
            for match in _OUTPUT_PATH.finditer(line):
                arity_zero = bool(re.match(r"\s*,\s*arity:\s*['\"]0\.\.", match.group(3)))
                declared.append(OutputPath(match.group(2), optional or arity_zero))
        return declared

    def preamble(self, label: str) -> str:
        """The Groovy statements of a section before its command string."""
        gstring = self.gstring(label)
        toks = self.sections.get(label, [])
        if gstring is None:
            return self.section_text(label)
        return "".join(t.value for t in toks if t.offset < gstring.start)


def _matching_brace(toks: tuple[Tok, ...], open_index: int) -> int:
    depth = 0
    for i in range(open_index, len(toks)):
        tok = toks[i]
        if tok.kind in Token.Operator and tok.value == "{":
            depth += 1
        elif tok.kind in Token.Operator and tok.value == "}":
            depth -= 1
            if depth == 0:
                return i
    raise ValueError("unbalanced braces")


def processes(path: Path) -> list[Process]:
    """The processes defined in a .nf file."""
    path = Path(path)
    text = path.read_text()
    toks = tokens(path)
    code = [i for i, t in enumerate(toks) if t.kind not in Token.Text and t.kind not in Token.Comment]
    found = []
    for position, index in enumerate(code[:-2]):
        tok = toks[index]
        if not (tok.kind in Token.Name and tok.value == "process"):
            continue
        name_tok, brace = toks[code[position + 1]], code[position + 2]
        if toks[brace].value != "{":
            continue
        close = _matching_brace(toks, brace)
        process = Process(name_tok.value, path, line_of(text, tok.offset), text=text[toks[brace].offset : toks[close].offset + 1])
        label, depth, current = "", 0, []
        for inner in toks[brace + 1 : close]:
            if inner.kind in Token.Operator and inner.value in "{([":
                depth += 1
            elif inner.kind in Token.Operator and inner.value in "})]":
                depth -= 1
            if depth == 0 and inner.kind is Token.Name.Label and inner.value in SECTION_LABELS:
                process.sections[label] = current
                label, current = inner.value[:-1], []
                continue
            current.append(inner)
        process.sections[label] = current
        found.append(process)
    return found


def all_processes() -> dict[str, Process]:
    """Every process of the pipeline by name."""
    return {p.name: p for path in pipeline_files(".nf") for p in processes(path)}


# --------------------------------------------------------------------------- commands


@dataclass
class StageCall:
    """One ``virnucpro_stage.py STAGE ...`` command line of a process script, with its options."""

    process: str
    script: str  # the bin/ script called
    stage: str
    options: set[str]
    line: str


_STAGE_LINE = re.compile(r"(?:^|[\s;|&(])([\w.-]+\.(?:py|sh))\s+([a-z][a-z0-9-]*)")


def _assigned_options(text: str, names: set[str], assignment: str) -> set[str]:
    options: set[str] = set()
    for name in names:
        for match in re.finditer(assignment.format(name=re.escape(name)), text, flags=re.M):
            options |= set(OPTION.findall(match.group(0)))
    return options


def stage_calls(process: Process, ext_args: str = "", values: dict[str, str] | None = None) -> list[StageCall]:
    """The bin/ script calls of a process's script section, with every option they receive.

    Options come from the command line itself, from shell or Groovy variables it expands
    (``$failed``, ``${classifier}``) and, for ``${args}``, from ``ext_args`` (conf/modules.config).
    ``values`` gives Groovy input variables a value (``{"kind": "esm"}`` for EMBED as EMBED_ESM).
    """
    gstring = process.gstring("script")
    if gstring is None:
        return []
    raw = "".join(t.value for t in gstring.tokens)
    for name, value in (values or {}).items():
        raw = raw.replace(f"${{{name}}}", value)
    preamble = process.preamble("script")
    calls = []
    for line in raw.splitlines():
        match = _STAGE_LINE.search(line)
        if not match:
            continue
        groovy_vars = {e for e in re.findall(r"\$\{\s*([A-Za-z_]\w*)\s*\}", line)}
        shell_vars = set(re.findall(r"\\\$\{?([A-Za-z_]\w*)", line))
        options = set(OPTION.findall(line.split(match.group(2), 1)[1]))
        options |= _assigned_options(preamble, groovy_vars - {"args"}, r"^\s*def\s+{name}\s*=.*$")
        options |= _assigned_options(raw, shell_vars, r"^\s*{name}=.*$")
        options |= _assigned_options(raw, shell_vars, r"^.*\b{name}=\".*$")
        if "args" in groovy_vars:
            options |= set(OPTION.findall(ext_args))
        calls.append(StageCall(process.name, match.group(1), match.group(2), options, line.strip()))
    return calls


# --------------------------------------------------------------------------- configs


def block_after(text: str, start: int) -> str:
    """The ``{ ... }`` block that opens at or after ``start`` in a config text (braces in strings ignored)."""
    toks = _tokens(text)
    open_index = next(i for i, t in enumerate(toks) if t.offset >= start and t.kind in Token.Operator and t.value == "{")
    close = _matching_brace(toks, open_index)
    return text[toks[open_index].offset : toks[close].offset + 1]


def with_name_blocks(path: Path) -> dict[str, str]:
    """``withName: 'NAME' { ... }`` blocks of a config file by selector."""
    text = Path(path).read_text()
    return {m.group(1): block_after(text, m.end()) for m in re.finditer(r"withName\s*:\s*['\"]([^'\"]+)['\"]", text)}


def params_block(path: Path) -> dict[str, str]:
    """``name -> raw value`` of the top-level ``params { }`` block of a config file."""
    text = Path(path).read_text()
    match = re.search(r"^params\s*\{", text, flags=re.M)
    if not match:
        return {}
    block = block_after(text, match.start())
    return dict(re.findall(r"^\s*([a-z_][a-z0-9_]*)\s*=\s*(.+?)\s*$", block, flags=re.M))


def literal(raw: str) -> object:
    """A config value as Python (None, bool, int, float, str) or the marker ``DYNAMIC``."""
    if raw == "null":
        return None
    if raw in ("true", "false"):
        return raw == "true"
    if re.fullmatch(r"-?\d+", raw):
        return int(raw)
    if re.fullmatch(r"-?\d+\.\d*", raw):
        return float(raw)
    if re.fullmatch(r"'[^']*'", raw) or re.fullmatch(r'"[^"$]*"', raw):
        return raw[1:-1]
    return DYNAMIC


DYNAMIC = object()


# --------------------------------------------------------------------------- strict syntax


def strict_syntax_problems(path: Path) -> list[str]:
    """What Nextflow's strict parser rejects (or deprecates) although Groovy accepts it, as ``file:line: why``."""
    path = Path(path)
    text = path.read_text()
    problems = []
    depth = 0
    statement_start = True
    for tok in tokens(path):
        where = f"{rel(path)}:{line_of(text, tok.offset)}"
        if tok.kind in Token.Name and tok.value == "Channel":
            problems.append(f"{where}: use `channel.` (not `Channel.`)")
        if tok.kind in Token.Name and tok.value == "it":
            problems.append(f"{where}: implicit closure parameter `it`; name the parameter")
        if tok.kind in Token.Keyword and tok.value in {"import", "class", "for", "while", "switch", "do"}:
            problems.append(f"{where}: `{tok.value}` is not allowed in Nextflow's strict syntax")
        if tok.kind is Token.Name.Label and tok.value == "shell:":
            problems.append(f"{where}: the process shell section is deprecated; use script:")
        if tok.kind in Token.Name and tok.value == "addParams":
            problems.append(f"{where}: include addParams is not supported; pass inputs explicitly")
        if tok.kind is Token.Literal.String.Escape and not ALLOWED_ESCAPES.fullmatch(tok.value):
            problems.append(f"{where}: invalid escape {tok.value!r} in a string")
        if tok.kind in Token.Operator and tok.value in "{([":
            depth += 1
        elif tok.kind in Token.Operator and tok.value in "})]":
            depth -= 1
        if depth == 0 and statement_start and tok.kind not in Token.Text and tok.kind not in Token.Comment:
            if path.suffix == ".config" and tok.value in {"def", "if"}:
                problems.append(f"{where}: config files allow only assignments, blocks and includeConfig")
            if path.suffix == ".nf" and tok.value not in {"include", "process", "workflow", "def", "params", "output", "nextflow", "enum", "record"}:
                problems.append(f"{where}: top-level statement `{tok.value}`; scripts contain only declarations")
        if tok.kind not in Token.Text and tok.kind not in Token.Comment:
            statement_start = False
        if depth == 0 and "\n" in tok.value and tok.kind in Token.Text:
            statement_start = True
    return problems
