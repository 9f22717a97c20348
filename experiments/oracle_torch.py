"""Moved to :mod:`experiments.bench.oracle_torch`.

Kept so that ``python -m experiments.oracle_torch`` still works.
"""

from experiments.bench.oracle_torch import main

if __name__ == "__main__":
    main()
