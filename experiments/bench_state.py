"""Moved to :mod:`experiments.bench.state`.

Kept so that ``python -m experiments.bench_state`` still works.
"""

from experiments.bench.state import main

if __name__ == "__main__":
    main()
