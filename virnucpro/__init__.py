"""virnucpro: identify viral sequences with six-frame translation, ESM-2 and DNABERT-S."""

__version__ = "0.1.0"
