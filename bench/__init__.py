"""Benchmarks for the ZLH control plane (not tests): run `python -m bench.run` or `make bench`."""
