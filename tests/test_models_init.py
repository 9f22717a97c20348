"""The studies' flat-drawing kernel initialisers give Flax's numbers bit for bit."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from experiments import models

# a dense kernel, a 2-D convolution's and a 1-D convolution's (each new shape compiles)
SHAPES = [(784, 300), (3, 3, 16, 32), (5, 8, 4)]
PAIRS = [
    (models.glorot_normal, nn.initializers.glorot_normal()),
    (models.he_normal, nn.initializers.he_normal()),
    (models.flat_variance_scaling(0.5, "fan_out"),
     nn.initializers.variance_scaling(0.5, "fan_out", "truncated_normal")),
]  # fmt: skip


@pytest.mark.parametrize("shape", SHAPES)
def test_same_numbers_as_flax(shape):
    for i, (mine, theirs) in enumerate(PAIRS):
        key = jax.random.key(i)
        np.testing.assert_array_equal(np.asarray(mine(key, shape)), np.asarray(theirs(key, shape)))


def test_same_numbers_compiled():
    key, shape = jax.random.key(3), SHAPES[1]
    mine, theirs = (jax.jit(f, static_argnums=1) for f in PAIRS[0])
    np.testing.assert_array_equal(np.asarray(mine(key, shape)), np.asarray(theirs(key, shape)))


def test_bad_input_names_the_initialiser():
    with pytest.raises(ValueError, match="flat_variance_scaling: unknown mode"):
        models.flat_variance_scaling(1.0, "fan_sideways")
    with pytest.raises(ValueError, match="flat_variance_scaling: a kernel has 2"):
        models.glorot_normal(jax.random.key(0), (5,))
