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
