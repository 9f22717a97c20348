"""The studies' flat-drawing kernel initialisers give Flax's numbers bit for bit."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from experiments import models

SHAPES = [(784, 300), (3, 3, 16, 32), (5, 8, 4), (2, 2), (3, 3, 3, 6, 7)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(
    ("mine", "theirs"),
    [
        (models.glorot_normal, nn.initializers.glorot_normal()),
        (models.he_normal, nn.initializers.he_normal()),
        (models.flat_variance_scaling(0.5, "fan_out"), nn.initializers.variance_scaling(
            0.5, "fan_out", "truncated_normal")),
    ],
)  # fmt: skip
def test_same_numbers_as_flax(shape, mine, theirs):
    for seed in range(3):
        key = jax.random.key(seed)
        want = np.asarray(theirs(key, shape))
        np.testing.assert_array_equal(np.asarray(mine(key, shape)), want)
        jitted = jax.jit(mine, static_argnums=1)(key, shape)
        np.testing.assert_array_equal(
            np.asarray(jitted), np.asarray(jax.jit(theirs, static_argnums=1)(key, shape))
        )


def test_a_model_init_is_unchanged():
    """LeNet-300-100 with the flat Glorot init equals the same net with Flax's."""

    class FlaxLeNet(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.relu(
                nn.Dense(300, kernel_init=nn.initializers.glorot_normal(), name="hidden_0")(x)
            )
            x = nn.relu(
                nn.Dense(100, kernel_init=nn.initializers.glorot_normal(), name="hidden_1")(x)
            )
            return nn.Dense(10, kernel_init=nn.initializers.glorot_normal(), name="output")(x)

    x = np.zeros((1, 784), np.float32)
    key = jax.random.key(7)
    ours = models.LeNet300().init(key, x)["params"]
    theirs = FlaxLeNet().init(key, x)["params"]
    jax.tree.map(np.testing.assert_array_equal, ours, theirs)


def test_bad_input_names_the_initialiser():
    with pytest.raises(ValueError, match="flat_variance_scaling: unknown mode"):
        models.flat_variance_scaling(1.0, "fan_sideways")
    with pytest.raises(ValueError, match="flat_variance_scaling: a kernel has 2"):
        models.glorot_normal(jax.random.key(0), (5,))
