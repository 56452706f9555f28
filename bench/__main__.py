"""`python -m bench`: run the benchmarks (see bench/run.py)."""

from .run import main

main()
