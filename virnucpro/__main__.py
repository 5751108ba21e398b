"""``python -m virnucpro`` runs the CLI."""

from virnucpro.cli import main

main()
