"""Tests run on 8 fake CPU devices, so pmap and sharding are tested on every machine.

The flag is set in the repository's root ``conftest.py``, which pytest loads first (before
JAX starts); this file checks it took effect.
"""

import jax


def pytest_configure(config):
    del config
    n = jax.device_count()
    if jax.default_backend() == "cpu" and n < 8:
        raise RuntimeError(f"expected 8 fake CPU devices, found {n}: was JAX imported early?")
