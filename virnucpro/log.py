"""Logging to stderr through rich: pretty on a terminal, plain lines elsewhere."""

from __future__ import annotations

import logging
import sys

from rich.console import Console
from rich.logging import RichHandler

LOGGER_NAME = "virnucpro"

stderr_console = Console(stderr=True)


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Configure the ``virnucpro`` logger: INFO by default, DEBUG with --verbose, errors only with --quiet."""
    level = logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO
    logger = logging.getLogger(LOGGER_NAME)
    logger.handlers.clear()
    if stderr_console.is_terminal:
        handler: logging.Handler = RichHandler(console=stderr_console, show_path=False, markup=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False


def get_logger(name: str = "") -> logging.Logger:
    """A child of the ``virnucpro`` logger."""
    return logging.getLogger(f"{LOGGER_NAME}.{name}" if name else LOGGER_NAME)
