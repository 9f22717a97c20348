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

import math
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

MODELS = ("lenet300", "conv")


def flat_variance_scaling(scale: float, mode: str):
    """``jax.nn.initializers.variance_scaling(scale, mode, "truncated_normal")`` for a
    kernel (fans from its last two axes and the receptive field before them), its numbers
    drawn as one vector and reshaped. The threefry stream is laid out row-major, so the
    values are the same bit for bit (``tests/test_models_init.py``), but XLA:CPU compiles
    the draw of a vector in about half the time of a 2-D shape's and a third of a 4-D
    one's (0.3 s against 0.5-0.75 s, once for every new shape of every program)."""
    if mode not in ("fan_in", "fan_out", "fan_avg"):
        raise ValueError(f"flat_variance_scaling: unknown mode {mode!r}")

    def init(key, shape, dtype=jnp.float32):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"flat_variance_scaling: a kernel has 2+ axes, got {shape}")
        field = math.prod(shape[:-2])
        fan_in, fan_out = shape[-2] * field, shape[-1] * field
        denominator = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}
        variance = jnp.array(scale / denominator[mode], dtype=dtype)
        # the standard deviation of a standard normal truncated to (-2, 2), as JAX's
        stddev = jnp.sqrt(variance) / jnp.array(0.87962566103423978, dtype)
        flat = jax.random.truncated_normal(key, -2, 2, (math.prod(shape),), dtype)
        return flat.reshape(shape) * stddev

    return init


glorot_normal = flat_variance_scaling(1.0, "fan_avg")  # nn.initializers.glorot_normal()
he_normal = flat_variance_scaling(2.0, "fan_in")  # he_normal() = kaiming_normal()


class LeNet300(nn.Module):
    """LeNet-300-100: 784-300-100-10 fully connected, ReLU."""

    hidden: Sequence[int] = (300, 100)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, kernel_init=glorot_normal, name=f"hidden_{i}")(x))
        return nn.Dense(self.num_classes, kernel_init=glorot_normal, name="output")(x)


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
            x = nn.Conv(c, (3,) * rank, kernel_init=glorot_normal, name=f"conv_{i}")(x)
            x = nn.relu(x)
        x = nn.max_pool(x, (2,) * rank, strides=(2,) * rank)
        x = x.reshape(x.shape[0], -1)
        for i, width in enumerate(self.hidden):
            x = nn.relu(nn.Dense(width, kernel_init=glorot_normal, name=f"hidden_{i}")(x))
        return nn.Dense(self.num_classes, kernel_init=glorot_normal, name="output")(x)


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


# --- the early-bird and early-bert studies (experiments/early_bird, experiments/early_bert)
# and experiments/bench/shrink.py: models whose widths are constructor arguments, so
# jaxsparse.structured.shrink's widths rebuild them smaller.


class Conv3x3(nn.Module):
    """A 3x3 'SAME' convolution without bias, computed as im2col + one matmul.

    XLA's CPU convolution is about 10x slower than a matmul for these small channel
    counts (measured: 28 vs 2.6 CPU-s an epoch of the early-bird VGG on 14x14 MNIST), and
    a matmul's cost falls with the widths as FLOPs do. The kernel is ``kernel`` of shape
    ``(3, 3, in, out)``, as ``nn.Conv``'s, so :func:`jaxsparse.structured.channels` finds it.
    """

    features: int

    @nn.compact
    def __call__(self, x):
        cin = x.shape[-1]
        kernel = self.param("kernel", he_normal, (3, 3, cin, self.features))
        h, w = x.shape[1:3]
        xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
        cols = jnp.concatenate(
            [xp[:, i : i + h, j : j + w, :] for i in range(3) for j in range(3)], axis=-1
        )
        return cols @ kernel.reshape(9 * cin, self.features)


class VGGBN(nn.Module):
    """A small VGG-style net: 3x3 conv + BatchNorm + ReLU blocks (``conv_i``, ``bn_i``),
    2x2 max-pooling after the blocks in ``pool_after``, global average pooling, a Dense
    ``output``. Global pooling makes the last conv's channels a group set of
    :func:`jaxsparse.structured.channels` too.
    """

    widths: Sequence[int] = (32, 32, 64, 64)
    input_shape: Sequence[int] = (14, 14, 1)
    pool_after: Sequence[int] = (1,)
    num_classes: int = 10
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x, train: bool = False):
        x = x.reshape(x.shape[0], *self.input_shape)
        for i, w in enumerate(self.widths):
            x = Conv3x3(w, name=f"conv_{i}")(x)
            x = nn.BatchNorm(
                use_running_average=not train, momentum=self.bn_momentum, name=f"bn_{i}"
            )(x)
            x = nn.relu(x)
            if i in self.pool_after:
                x = nn.max_pool(x, (2, 2), strides=(2, 2))
        return nn.Dense(self.num_classes, name="output")(jnp.mean(x, axis=(1, 2)))

    def flops(self) -> int:
        """Multiply-adds x 2 of the convolutions and the classifier, per example."""
        h, w, cin = self.input_shape
        total = 0
        for i, c in enumerate(self.widths):
            total += 2 * h * w * 9 * cin * c
            cin = c
            if i in self.pool_after:
                h, w = h // 2, w // 2
        return total + 2 * cin * self.num_classes


class SlimAttention(nn.Module):
    """Multi-head self-attention with EarlyBERT's per-head slimming coefficients:
    ``head_coef[h]`` (initialised to 1) multiplies head h's output, which is the same as
    scaling its attention probabilities. The projections ``query``, ``key``, ``value``
    (``[d, heads, head_dim]`` kernels) and ``out`` (``[heads, head_dim, d]``) are laid out
    as in Flax's attention, so :func:`jaxsparse.structured.heads` finds them."""

    heads: int
    head_dim: int = 16

    @nn.compact
    def __call__(self, x):
        q, k, v = (
            nn.DenseGeneral((self.heads, self.head_dim), name=n)(x)
            for n in ("query", "key", "value")
        )
        logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(float(self.head_dim))
        heads = jnp.einsum("bhqk,bkhd->bqhd", nn.softmax(logits, axis=-1), v)
        heads = heads * self.param("head_coef", nn.initializers.ones, (self.heads,))[:, None]
        return nn.DenseGeneral(x.shape[-1], axis=(-2, -1), name="out")(heads)


class SlimBlock(nn.Module):
    """A pre-LayerNorm transformer block: :class:`SlimAttention` (``attn``), then an FFN
    (``ffn_in``, GELU, ``ffn_out``) whose unit j's activation is multiplied by the
    slimming coefficient ``ffn_coef[j]`` (initialised to 1), as in EarlyBERT."""

    heads: int
    ffn: int
    head_dim: int = 16

    @nn.compact
    def __call__(self, x):
        x = x + SlimAttention(self.heads, self.head_dim, name="attn")(nn.LayerNorm(name="ln_0")(x))
        y = nn.gelu(nn.Dense(self.ffn, name="ffn_in")(nn.LayerNorm(name="ln_1")(x)))
        y = y * self.param("ffn_coef", nn.initializers.ones, (self.ffn,))
        return x + nn.Dense(x.shape[-1], name="ffn_out")(y)


class SlimEncoder(nn.Module):
    """A small transformer encoder over image patches (``patch x patch`` pixels a token),
    with per-layer head counts and FFN widths as constructor arguments."""

    heads: Sequence[int] = (4, 4, 4, 4)
    ffn: Sequence[int] = (256, 256, 256, 256)
    width: int = 64
    head_dim: int = 16
    patch: int = 7
    input_shape: Sequence[int] = (28, 28, 1)
    num_classes: int = 10

    @nn.compact
    def __call__(self, x):
        h, w, c = self.input_shape
        p = self.patch
        x = x.reshape(x.shape[0], h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
        x = x.reshape(x.shape[0], (h // p) * (w // p), p * p * c)
        x = nn.Dense(self.width, name="embed")(x)
        x = x + self.param("pos", nn.initializers.normal(0.02), x.shape[1:])
        for i, (nh, nf) in enumerate(zip(self.heads, self.ffn)):
            x = SlimBlock(nh, nf, self.head_dim, name=f"block_{i}")(x)
        x = nn.LayerNorm(name="ln_out")(jnp.mean(x, axis=1))
        return nn.Dense(self.num_classes, name="output")(x)

    def flops(self) -> int:
        """Multiply-adds x 2 of the matmuls (projections, attention, FFN), per example."""
        h, w, c = self.input_shape
        t, p, d = (h // self.patch) * (w // self.patch), self.patch, self.width
        total = t * p * p * c * d
        for nh, nf in zip(self.heads, self.ffn):
            inner = nh * self.head_dim
            total += t * (4 * d * inner + 2 * d * nf) + 2 * t * t * inner
        return 2 * (total + d * self.num_classes)


def slim_encoder_spec(params, layers: int) -> dict:
    """The group spec of a :class:`SlimEncoder`: the heads of every block
    (``block_i/attn``) and its FFN units (``block_i/ffn_in``), each group with its
    slimming coefficient, so shrinking cuts the coefficients too."""
    import jaxsparse as js

    spec = {}
    for i in range(layers):
        b = f"block_{i}"
        heads = js.structured.heads(params, [f"{b}/attn"])[f"{b}/attn"]
        spec[f"{b}/attn"] = [*heads, (rf"^{b}/attn/head_coef$", 0)]
        ffn = js.structured.neurons(params, [f"{b}/ffn_in", f"{b}/ffn_out"])[f"{b}/ffn_in"]
        spec[f"{b}/ffn_in"] = [*ffn, (rf"^{b}/ffn_coef$", 0)]
    return spec


# --- a classifier's training round on a study's arrays (lottery, transfer, elastic) ----


def classifier_eval(model, arrays: dict, *, train_acc: bool = False):
    """``eval_fn(params)`` of a Linen classifier on a study's arrays: validation loss
    (softmax cross-entropy) and accuracy, test accuracy, and with ``train_acc`` the
    accuracy on the whole training set (to tell an underfit net from an overfit one)."""
    import optax

    def eval_fn(params):
        def logits(split):
            return model.apply({"params": params}, arrays[f"x_{split}"])

        def acc(split, z):
            return jnp.mean(jnp.argmax(z, -1) == arrays[f"y_{split}"])

        val = logits("val")
        out = {
            "val_loss": optax.softmax_cross_entropy_with_integer_labels(
                val, arrays["y_val"]
            ).mean(),
            "val_acc": acc("val", val),
            "test_acc": acc("test", logits("test")),
        }
        if train_acc:
            out["train_acc"] = acc("train", logits("train"))
        return out

    return eval_fn


def classifier_train_fn(
    model,
    arrays: dict,
    *,
    batch_size: int,
    steps: int,
    eval_every: int,
    batch_sharding=None,
    train_acc: bool = False,
):
    """``jaxsparse.make_train_fn`` for a Linen classifier on a study's arrays
    (``x_train``/``y_train``, ``x_val``/``y_val``, ``x_test``/``y_test``): softmax
    cross-entropy, evaluated every ``eval_every`` steps by :func:`classifier_eval` (the
    early-stopping metrics every study reports; ``train_acc`` adds the training set's
    accuracy); ``batch_sharding`` as in ``make_train_fn``."""
    import optax

    import jaxsparse as js

    def xent(params, x, y):
        logits = model.apply({"params": params}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    return js.make_train_fn(
        lambda p, b: xent(p, b["x"], b["y"]),
        {"x": arrays["x_train"], "y": arrays["y_train"]},
        batch_size=batch_size,
        steps=steps,
        eval_fn=classifier_eval(model, arrays, train_acc=train_acc),
        eval_every=eval_every,
        batch_sharding=batch_sharding,
    )


def imp_program(
    model,
    where: str,
    *,
    fraction: float,
    batch_size: int,
    steps: int,
    eval_every: int,
    compile: str = "optimized",
):
    """The jitted ``program(states, keys, arrays, rewind_to=None)`` of the studies that
    train many tickets at once (transfer, elastic): every state (a leading axis) trains
    ``steps`` updates (:func:`classifier_train_fn`), is evaluated, then pruned by IMP
    (``fraction`` of its alive ``where`` weights, one global threshold) and rewound, to
    its own snapshot or to ``rewind_to``. Returns (next states, trained params, metrics
    with the ``where`` density). ``compile``: ``"optimized"`` or ``"fast"``
    (:func:`experiments.harness.compiler_options`)."""
    import jax

    import jaxsparse as js

    def program(states, keys, arrays, rewind_to=None):
        train_fn = classifier_train_fn(
            model, arrays, batch_size=batch_size, steps=steps, eval_every=eval_every
        )

        def one(state, key, target):
            trained, evals = train_fn(state, key)
            evals["density"] = js.density(trained.mask, where)
            pruned = js.imp_round(trained, fraction=fraction, scope="global", rewind_to=target)
            return pruned, trained.params, evals

        return jax.vmap(one)(states, keys, rewind_to)

    from experiments.harness import compiler_options

    return jax.jit(program, compiler_options=compiler_options(compile))


def sparse_states(model, tx, input_size: int, **create):
    """``(make_state, init)`` of a model trained by many seeds at once:
    ``make_state(params, mask)`` is its ``SparseTrainState`` (``create``: the other
    arguments, e.g. ``where``, ``rewind_step``), ``init(keys)`` the params of every key,
    stacked."""
    import jax

    import jaxsparse as js

    dummy = jnp.zeros((1, input_size), jnp.float32)

    # Eagerly, one key at a time, stacked: the same values as a jitted, vmapped init
    # (a key's stream does not depend on the others). XLA:CPU takes about a minute to
    # compile a ResNet's init as one program, at every depth; eagerly, each op compiles
    # once per shape, and the shapes repeat across blocks and depths.
    def init_one(key):
        return model.init(key, dummy)["params"]

    def make_state(params, mask):
        return js.SparseTrainState.create(
            apply_fn=model.apply, params=params, tx=tx, mask=mask, **create
        )

    def init(keys):
        return jax.tree.map(lambda *xs: jnp.stack(xs), *[init_one(k) for k in keys])

    return make_state, init
