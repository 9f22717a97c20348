"""The networks of the lottery-ticket study (flax.linen), with the per-layer pruning
rates of Frankle & Carbin (2019).

* ``lenet300``: LeNet-300-100, Glorot-normal kernels and zero biases, as in the paper.
* ``conv``: a small network in the spirit of the paper's Conv-2 (two 3x3 convolutions,
  a 2x2 max-pool, then dense layers), narrowed to stay cheap on a CPU. Works for 2-D
  images and for 1-D signals (MNIST-1D), the kernel rank following the input's.

Layers are named (``hidden_*``, ``conv_*``, ``output``) so the pruning rates below
address them by regular expression on the parameter path.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

MODELS = ("lenet300", "conv")

_glorot = nn.initializers.glorot_normal()


class LeNet300(nn.Module):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU."""

    hidden: Sequence[int] = (300, 100)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, kernel_init=_glorot, name=f"hidden_{i}")(x))
        return nn.Dense(self.num_classes, kernel_init=_glorot, name="output")(x)


class ConvNet(nn.Module):
    """Conv-2 in miniature: conv3-conv3-maxpool, then dense layers."""

    input_shape: Sequence[int] = (28, 28, 1)
    channels: Sequence[int] = (16, 16)
    hidden: Sequence[int] = (128,)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        rank = len(self.input_shape) - 1
        for i, c in enumerate(self.channels):
            x = nn.Conv(c, (3,) * rank, kernel_init=_glorot, name=f"conv_{i}")(x)
            x = nn.relu(x)
        x = nn.max_pool(x, (2,) * rank, strides=(2,) * rank)
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, kernel_init=_glorot, name=f"hidden_{i}")(x))
        return nn.Dense(self.num_classes, kernel_init=_glorot, name="output")(x)


def build(name: str, input_shape: Sequence[int], num_classes: int = 10) -> nn.Module:
    """The model called ``name`` (one of :data:`MODELS`) for inputs of ``input_shape``."""
    if name == "lenet300":
        return LeNet300(num_classes=num_classes)
    if name == "conv":
        return ConvNet(input_shape=tuple(input_shape), num_classes=num_classes)
    raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODELS)}")


def pruning_rates(name: str, fraction: float, output_fraction: float) -> dict[str, float]:
    """``{path_regex: fraction}`` overrides for :func:`jaxsparse.imp_round`.

    Frankle & Carbin (2019): LeNet prunes hidden layers at ``fraction`` (20%) and the
    output layer at ``output_fraction`` (10%); Conv-2 prunes conv layers at 10%, dense
    layers at 20% and the output at half the dense rate. Layers not matched here are
    pruned at ``fraction``.
    """
    rates = {r"^output/": output_fraction}
    if name == "conv":
        rates[r"^conv_"] = fraction / 2
    return rates


def num_params(params) -> int:
    import jax

    return sum(int(jnp.size(x)) for x in jax.tree.leaves(params))
