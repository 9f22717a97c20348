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


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """For pytest-xdist's ``--dist loadgroup`` (the default, see ``pyproject.toml``): each
    test file runs whole on one worker, so its module fixtures compile once; files that
    share a compiled study run say so with ``pytest.mark.xdist_group(study)``."""
    for item in items:
        if not item.get_closest_marker("xdist_group"):
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


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
