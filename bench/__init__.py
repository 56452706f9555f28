"""Benchmarks of the resolver against direct download and /healthz; run with `python -m bench`."""
