"""Moved to :mod:`experiments.bench.core`.

Kept so that ``python -m experiments.bench_core`` still works.
"""

from experiments.bench.core import main

if __name__ == "__main__":
    main()
