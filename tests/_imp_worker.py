"""A small IMP run that checkpoints every round and resumes: the process that
``tests/test_checkpoint.py`` kills with SIGKILL and restarts.

Usage: python tests/_imp_worker.py CKPT_ROOT OUT_DIR [--rounds 6] [--delay SECONDS]

It is ``jaxsparse.lottery.run_resumable``: round r trains the current ticket, prunes 20%
and rewinds, and is saved as ``CKPT_ROOT/round_{r:04d}``. When a round checkpoint exists
the run resumes after the latest one, so an interrupted run and an uninterrupted one end
with the same ticket, written to ``OUT_DIR`` by ``save_ticket``.
``--delay`` sleeps after each checkpoint, giving the test time to kill mid-run.
"""

import os

if __name__ == "__main__":  # as a script only: never touch an importing process's env
    # One CPU device, whatever the parent asked for, so that every run compiles the same.
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsparse as js
from jaxsparse import checkpoint


def make_problem():
    # numpy, not jax.random: eager jax ops would each compile, and the run should be quick.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 16)).astype(np.float32)
    w_true = rng.normal(size=(16, 1)).astype(np.float32) * (np.arange(16) < 4)[:, None]
    data = {"x": jnp.asarray(x), "y": jnp.asarray(np.tanh(x @ w_true))}
    params = {
        "w1": jnp.asarray(rng.normal(size=(16, 32)).astype(np.float32) / 4.0),
        "b1": jnp.zeros(32),
        "w2": jnp.asarray(rng.normal(size=(32, 1)).astype(np.float32) / 6.0),
        "b2": jnp.zeros(1),
    }
    return data, params


def loss_fn(params, batch):
    h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - batch["y"]) ** 2)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("ckpt_root")
    parser.add_argument("out_dir")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()

    data, params = make_problem()
    fresh = js.SparseTrainState.create(
        apply_fn=None, params=params, tx=optax.adam(1e-2), rewind_step=10
    )
    train_fn = js.make_train_fn(loss_fn, data, batch_size=32, steps=200)
    last = checkpoint.latest_round(args.ckpt_root)
    if last is not None:
        print(f"resumed from round {last}", flush=True)
    state, history = js.lottery.run_resumable(
        fresh,
        train_fn,
        jax.random.key(42),
        rounds=args.rounds,
        directory=args.ckpt_root,
        keep=3,
        on_round=lambda r, s, rec: time.sleep(args.delay),
        fraction=0.2,
    )
    losses = np.asarray(history["metrics"])[:, 0, -1].tolist()  # last step of each round
    checkpoint.save_ticket(
        args.out_dir,
        state.mask,
        state.params,
        {"rounds": args.rounds, "losses": losses, "sparsity": float(js.sparsity(state.mask))},
    )
    print("done", flush=True)


if __name__ == "__main__":
    main()
