"""Import every subcommand module so each registers itself on the ``cli`` group."""

from virnucpro.cli import (  # noqa: F401
    checkpoint,
    classify,
    embed,
    evaluate,
    predict,
    prepare,
    summarize,
    testmodels,
    train,
)
