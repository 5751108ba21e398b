"""Import every subcommand module so each registers itself on the ``cli`` group."""

from virnucpro.cli import (  # noqa: F401
    checkpoint,
    classify,
    embed,
    fetch,
    predict,
    prepare,
    summarize,
    testmodels,
)
