"""Root pytest set-up: 8 fake CPU devices and the names the docstring examples use."""

import os

# Before JAX initialises its backends: 8 fake CPU devices for pmap and sharding tests.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (
        os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
    ).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax
import jax.numpy as jnp
import optax
import pytest

import jaxsparse

# Value tests compare against float32 references. On a recent NVIDIA GPU JAX multiplies
# float32 matrices in TF32 by default (about 1e-3 off); ask for full float32 there. On
# the CPU float32 matmuls are full precision already, so nothing changes.
if jax.default_backend() != "cpu":
    jax.config.update("jax_default_matmul_precision", "highest")


def pytest_xdist_auto_num_workers(config):
    """``-n auto`` (the default, see ``pyproject.toml``): one pytest-xdist worker a core
    from 2 cores up, none on one. Measured on 2 cores with a cold compilation cache
    (2026-12-04), the suite took 858 s in one process and 620 s on 2 workers (1,144 CPU-s).
    An earlier measurement (860 s on 2 workers against 842 s) no longer holds.
    ``PYTEST_XDIST_AUTO_NUM_WORKERS`` still overrides it."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores if (cores or 1) >= 2 else 0


# Test files that share a session fixture run on one worker, so it is computed once:
# the lottery study's --mesh quick run is compared against by the two-process run.
SHARED_WORKER = {"tests/test_multihost.py": "tests/test_experiment_lottery.py"}


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadfile`` (the default), with the files of :data:`SHARED_WORKER` in one
    work unit."""
    if config.getvalue("dist") != "loadfile":
        return None  # pytest-xdist's own choice
    from xdist.scheduler import LoadFileScheduling

    class SharedFileScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = super()._split_scope(nodeid)
            return SHARED_WORKER.get(file, file)

    return SharedFileScheduling(config, log)


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace):
    doctest_namespace.update(
        jax=jax,
        jnp=jnp,
        optax=optax,
        js=jaxsparse,
        scores=jaxsparse.scores,
        mask_like=jaxsparse.mask_like,
    )
