"""Benchmarks: `python benchmarks/run.py` (CPU stages, predict, reference strategy) and the GPU script."""
