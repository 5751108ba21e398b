"""Import every subcommand module so each registers itself on the ``cli`` group."""

from virnucpro.cli import (  # noqa: F401
    checkpoint,
    classify,
    embed,
    predict,
    prepare,
    summarize,
    testmodels,
)
