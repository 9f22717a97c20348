"""The transfer study's network: a small 1-D CNN for MNIST-1D (flax.linen).

Greydanus (2020) finds CNNs clearly better than MLPs on MNIST-1D; this one follows the
paper's shape (a few narrow convolutions, then a linear read-out) with one hidden dense
layer, so that the pruned backbone has both convolution and dense kernels. Layers are
named ``conv_*``, ``hidden_*`` and ``output`` (the task head) so the study addresses
them by regular expression on the parameter path.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from experiments.models import glorot_normal


class Conv1D(nn.Module):
    """A 'SAME' 1-D convolution computed as im2col + one matmul.

    Under ``vmap`` over many networks' kernels this is one batched matmul, where XLA's
    CPU convolution with per-network kernels is several times slower. The kernel has
    ``nn.Conv``'s layout, ``(width, in, out)``.
    """

    features: int
    width: int = 5

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", glorot_normal, (self.width, cin, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.features,))
        n = x.shape[1]
        lo = (self.width - 1) // 2
        xp = jnp.pad(x, ((0, 0), (lo, self.width - 1 - lo), (0, 0)))
        cols = jnp.concatenate([xp[:, i : i + n, :] for i in range(self.width)], axis=-1)
        return cols @ kernel.reshape(self.width * cin, self.features) + bias


class CNN1D(nn.Module):
    """conv5-pool2-conv5-pool2, a hidden dense layer and the ``output`` head, ReLU.

    With the defaults (16 channels, 64 hidden units, inputs of length 40) the backbone
    holds 80 + 1,280 + 10,240 = 11,600 prunable kernel weights and the head 650.
    """

    length: int = 40
    channels: Sequence[int] = (16, 16)
    hidden: Sequence[int] = (64,)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], self.length, 1)
        for i, c in enumerate(self.channels):
            x = nn.relu(Conv1D(c, name=f"conv_{i}")(x))
            x = nn.max_pool(x, (2,), strides=(2,))
        x = x.reshape(x.shape[0], -1)
        for i, w in enumerate(self.hidden):
            x = nn.relu(nn.Dense(w, kernel_init=glorot_normal, name=f"hidden_{i}")(x))
        return nn.Dense(self.num_classes, kernel_init=glorot_normal, name="output")(x)
