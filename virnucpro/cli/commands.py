"""Import every subcommand module so each registers itself on the ``cli`` group."""

import importlib

for _name in (
    "prepare",
    "embed",
    "classify",
    "predict",
    "summarize",
    "checkpoint",
    "testmodels",
):
    try:
        importlib.import_module(f"virnucpro.cli.{_name}")
    except ModuleNotFoundError as _error:  # a command module not written yet
        if _error.name != f"virnucpro.cli.{_name}":
            raise
