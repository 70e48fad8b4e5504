"""Benchmarks: one script per area, ``python -m bench.<name>``; results in bench/results/."""
