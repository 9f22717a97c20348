"""What the rewind snapshot costs: SparseTrainState vs. Flax's TrainState, one step.

``SparseTrainState.apply_gradients`` does what ``flax.training.train_state.TrainState``
does with a ``jaxsparse.masked`` optimizer, plus a ``lax.cond`` that captures the params
and optimizer state when ``step`` reaches the rewind step k. This times a full training
step of LeNet-300-100 (forward, loss, gradient, masked Adam, apply; batch 60, 80%-sparse
mask) inside one ``lax.scan``, for the Flax state and for SparseTrainState with k = 0
(no capture during training) and k = 100 (a capture once, mid-run), interleaved, and
prints the ratios to the Flax state measured in the same run.

Run::

    python -m experiments.bench.state [--quick]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

import jaxsparse as js
from experiments.bench import timing
from experiments.models import LeNet300  # the study's LeNet-300-100

BATCH, STEPS = 60, 200


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args(argv)
    repeats = 3 if args.quick else 15

    model = LeNet300()
    params = model.init(jax.random.key(0), jnp.ones((1, 784)))["params"]
    prune = jax.jit(
        lambda p: js.prune(js.scores.magnitude(p), js.mask_like(p), 0.8, scope="global")
    )
    mask = prune(params)
    xs = jax.random.normal(jax.random.key(1), (STEPS, BATCH, 784))
    ys = jax.random.randint(jax.random.key(2), (STEPS, BATCH), 0, 10)

    def loss_fn(p, x, y):
        logits = model.apply({"params": p}, x)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    @jax.jit
    def train(state, xs, ys):
        def body(s, batch):
            return s.apply_gradients(grads=jax.grad(loss_fn)(s.params, *batch)), None

        return jax.lax.scan(body, state, (xs, ys))[0]

    states = {
        "flax TrainState + masked(adam)": train_state.TrainState.create(
            apply_fn=model.apply,
            params=js.apply_mask(params, mask),
            tx=js.masked(optax.adam(1e-3), mask),
        ),
        "SparseTrainState, k = 0": js.SparseTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-3), mask=mask
        ),
        "SparseTrainState, k = 100": js.SparseTrainState.create(
            apply_fn=model.apply, params=params, tx=optax.adam(1e-3), mask=mask, rewind_step=100
        ),
    }
    calls = {name: (lambda s=s: train(s, xs, ys)) for name, s in states.items()}
    t = timing.interleaved(calls, repeats)
    base = "flax TrainState + masked(adam)"
    print(
        f"jax {jax.__version__} ({jax.default_backend()}), {STEPS} steps in one lax.scan, "
        f"{timing.clock_words()}, median of {repeats} interleaved repeats\n"
    )
    rows = [timing.compare(name, t, name, base, base, per=STEPS) for name in states]
    print(timing.table(rows, [("what", "train state"), ("ours_ms", "ms/step"), ("ratio", "ratio")]))


if __name__ == "__main__":
    main()
