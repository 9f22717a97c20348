"""The ResNet family of the elastic study: ResNet-(6N+2) in miniature for 14x14 digits.

A 3x3 stem (stride 2), then three stages of ``N`` basic blocks with ``width``,
``2 width`` and ``4 width`` channels; block 0 of stages 1 and 2 halves the resolution and
has a 1x1 projection shortcut; global average pooling and a dense head. Parameters are
named ``stem/...``, ``stage{s}_block{b}/{conv1,conv2,shortcut}/kernel``,
``stage{s}_block{b}/alpha`` and ``head/...``, so the default block regex of
:func:`jaxsparse.transfer.elastic` finds the blocks.

There is no normalisation layer (no batch statistics to carry): each residual branch is
scaled by a learnable scalar ``alpha`` (SkipInit, De & Smith, NeurIPS 2020), initialised
to 0.2 rather than 0: Adam moves a scalar by about the learning rate a step, so from 0 the
residual branches of a 150-step training would barely open. Convolutions are written as
im2col matmuls: on a CPU, XLA's convolution of these few channels is ~10x slower.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

ALPHA_INIT = 0.2  # small, so deep stacks start near identity, large enough to learn fast
PRUNABLE = r"^stage\d+_block\d+/.*kernel$"  # block convs and shortcuts; stem, head dense


class Conv(nn.Module):
    """A k x k convolution (k = 1 or 3, 'SAME' padding) as a matmul over patches."""

    features: int
    size: int = 3
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param(
            "kernel", nn.initializers.he_normal(), (self.size, self.size, cin, self.features)
        )
        s = self.stride
        if self.size == 1:
            return x[:, ::s, ::s] @ kernel[0, 0]
        h, w = x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        patches = jnp.concatenate(
            [xp[:, i : i + h : s, j : j + w : s] for i in range(3) for j in range(3)], -1
        )
        return patches @ kernel.reshape(9 * cin, self.features)


class Block(nn.Module):
    """A basic block: conv3-relu-conv3, scaled by ``alpha``, plus the shortcut."""

    features: int
    stride: int = 1

    @nn.compact
    def __call__(self, x):
        y = nn.relu(Conv(self.features, stride=self.stride, name="conv1")(x))
        y = Conv(self.features, name="conv2")(y)
        alpha = self.param("alpha", nn.initializers.constant(ALPHA_INIT), ())
        if self.stride != 1 or x.shape[-1] != self.features:
            x = Conv(self.features, 1, self.stride, name="shortcut")(x)
        return nn.relu(x + alpha * y)


class ResNet(nn.Module):
    """ResNet-(6N+2): ``blocks`` (N) basic blocks in each of three stages."""

    blocks: int
    width: int = 8
    input_shape: tuple = (14, 14, 1)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], *self.input_shape)
        x = nn.relu(Conv(self.width, stride=2, name="stem")(x))
        for s in range(3):
            for b in range(self.blocks):
                stride = 2 if (b == 0 and s > 0) else 1
                x = Block(self.width * 2**s, stride, name=f"stage{s}_block{b}")(x)
        return nn.Dense(self.num_classes, name="head")(x.mean((1, 2)))
