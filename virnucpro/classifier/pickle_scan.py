"""What a pickle would import, found by a static scan of its opcodes (nothing is unpickled).

Used before a reference checkpoint is loaded: every ``module.name`` it asks for must be on an
allow-list (:func:`virnucpro.classifier.checkpoints.check_pickle_imports`).
"""

from __future__ import annotations

import pickletools
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from pathlib import Path
from typing import Any

from virnucpro.errors import ModelError, describe

_STRING_RESULTS = {"str", "bytes_or_str"}  # pushes that may name a STACK_GLOBAL's module or attribute
_EXTENSION_OPS = {"EXT1", "EXT2", "EXT4"}


def _import_name(module: str, name: str) -> str:
    """``module.name`` after pickle's Python 2 name mapping (as the unpicklers apply it)."""
    if (module, name) in NAME_MAPPING:
        module, name = NAME_MAPPING[(module, name)]
    elif module in IMPORT_MAPPING:
        module = IMPORT_MAPPING[module]
    return f"{module}.{name}"


def pickle_imports(data: bytes, source: Path | str = "pickle") -> set[str]:
    """Every ``module.name`` a pickle would import, found without unpickling anything.

    Walks the opcodes with a symbolic stack so that protocol-4 ``STACK_GLOBAL`` (whose
    names come from earlier string pushes or the memo) is resolved too. Anything that
    cannot be resolved statically (extension codes, computed names, malformed streams)
    is refused with a ModelError.
    """
    imports: set[str] = set()
    stack: list[Any] = []
    marks: list[list[Any]] = []
    memo: dict[int, Any] = {}
    try:
        for opcode, arg, _pos in pickletools.genops(data):
            name = opcode.name
            if name in _EXTENSION_OPS:
                raise ModelError(f"{source}: refused: it imports through pickle extension codes ({name})")
            if name in ("GLOBAL", "INST"):
                module, attr = arg.split(" ", 1)
                imports.add(_import_name(module, attr))
            if name == "STACK_GLOBAL":
                attr, module = stack.pop(), stack.pop()
                if not (isinstance(module, str) and isinstance(attr, str)):
                    raise ModelError(f"{source}: refused: it computes the name of an import (STACK_GLOBAL)")
                imports.add(_import_name(module, attr))
                stack.append(None)
                continue
            if name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo[int(arg)] = stack[-1]
                continue
            if name == "MEMOIZE":
                memo[len(memo)] = stack[-1]
                continue
            if name in ("GET", "BINGET", "LONG_BINGET"):
                stack.append(memo[int(arg)])
                continue
            before = opcode.stack_before
            if pickletools.markobject in before:
                stack = marks.pop()
                before = before[: before.index(pickletools.markobject)]
            if before:
                if len(stack) < len(before):
                    raise IndexError("stack underflow")
                del stack[len(stack) - len(before) :]
            if name == "MARK":
                marks.append(stack)
                stack = []
                continue
            after = opcode.stack_after
            if len(after) == 1 and after[0].name in _STRING_RESULTS and isinstance(arg, (str, bytes)):
                stack.append(arg if isinstance(arg, str) else arg.decode("latin-1"))
            else:
                stack.extend([None] * len(after))
    except ModelError:
        raise
    except (ValueError, IndexError, KeyError) as error:
        raise ModelError(f"{source}: refused: malformed pickle data ({describe(error)})") from None
    return imports
