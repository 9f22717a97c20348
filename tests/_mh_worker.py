"""One of N processes of a real multi-process JAX run on localhost, started by
``tests/_multihost.py`` for ``tests/test_multihost.py``.

Usage: python tests/_mh_worker.py --coordinator HOST:PORT --num-processes N
       --process-id I --out DIR {main,resumable} [options]

``main`` checks, in one start-up: global pruning of params split across the processes,
three IMP rounds (``lottery.run``) on data each process feeds only its own rows of, a
checkpoint saved by all processes and restored onto the mesh, an uninterrupted
``run_resumable``, and last a run in which process 1 kills itself after round 0 (the
others must then fail, not hang). ``resumable`` is the ``run_resumable`` run the test
kills with SIGKILL and starts again. Results go to ``DIR`` as ``.npz`` files per process.
"""

from __future__ import annotations

import os

if __name__ == "__main__":  # as a script only: never touch an importing process's env
    os.environ["JAX_PLATFORMS"] = "cpu"

import argparse
import functools
import signal
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxsparse as js
from jaxsparse import checkpoint

ROUNDS, STEPS, BATCH, FRACTION = 3, 16, 32, 0.3
KEY = 7
T0 = time.monotonic()


# --- the problem, shared with the test's single-process reference ----------------------


def prune_params():
    rng = np.random.default_rng(0)
    return {
        "a": rng.normal(size=(64, 24)).astype(np.float32),
        "b": rng.normal(size=(32, 8)).astype(np.float32),
    }


def prune_fn(params, mask):
    return js.prune(js.scores.magnitude(params), mask, 0.37, scope="global")


def problem():
    """Data (256 examples) and the params of a 16-32-1 MLP, as NumPy arrays."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(256, 16)).astype(np.float32)
    w = rng.normal(size=(16, 1)).astype(np.float32) * (np.arange(16) < 4)[:, None]
    data = {"x": x, "y": np.tanh(x @ w)}
    params = {
        "w1": rng.normal(size=(16, 32)).astype(np.float32) / 4.0,
        "b1": np.zeros(32, np.float32),
        "w2": rng.normal(size=(32, 1)).astype(np.float32) / 6.0,
        "b2": np.zeros(1, np.float32),
    }
    return data, params


def loss_fn(params, batch):
    h = jnp.tanh(batch["x"] @ params["w1"] + params["b1"])
    return jnp.mean((h @ params["w2"] + params["b2"] - batch["y"]) ** 2)


def new_state(params):
    return js.SparseTrainState.create(
        apply_fn=None, params=params, tx=optax.adam(1e-2), rewind_step=5
    )


def train_fn(data, batch_sharding=None):
    return js.make_train_fn(
        loss_fn, data, batch_size=BATCH, steps=STEPS, batch_sharding=batch_sharding
    )


# --- the worker ------------------------------------------------------------------------


def log(msg: str) -> None:
    stamp = f"{time.monotonic() - T0:.1f} s, {time.process_time():.1f} s CPU"
    print(f"[p{jax.process_index()} {stamp}] {msg}", flush=True)


def setup(args):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=args.coordinator,
        num_processes=args.num_processes,
        process_id=args.process_id,
        heartbeat_timeout_seconds=args.heartbeat,
    )
    assert jax.process_count() == args.num_processes, jax.process_count()
    mesh = js.parallel.data_mesh()
    sharded = js.parallel.batch_sharding(mesh)
    data, params = problem()
    rows = js.parallel.process_rows(len(data["x"]), sharded)
    # each process feeds only its own rows; together they form one global array
    data = js.parallel.shard_batch(jax.tree.map(lambda a: a[rows], data), sharded)
    state = jax.device_put(new_state(params), js.parallel.replicated(mesh))
    log(f"{jax.device_count()} devices, {jax.local_device_count()} here, rows {rows}")
    return mesh, data, state


def save(out: Path, name: str, tree) -> None:
    flat = jax.tree_util.tree_flatten_with_path(js.parallel.to_host(tree))[0]
    arrays = {js.filters.path_str(p): np.asarray(x) for p, x in flat}
    np.savez(out / f"{name}.p{jax.process_index()}.npz", **arrays)


def main_checks(args, out: Path) -> None:
    mesh, data, state = setup(args)
    sharded = js.parallel.batch_sharding(mesh)
    assert (jax.device_count(), jax.local_device_count()) == (8, 4)

    # 1. global pruning of params split across the processes
    params = prune_params()
    local = {k: v[js.parallel.process_rows(len(v), sharded)] for k, v in params.items()}
    p = js.parallel.shard_batch(local, sharded)
    assert not p["a"].is_fully_addressable
    mask = jax.jit(prune_fn)(p, js.mask_like(p))
    assert mask["a"].sharding == p["a"].sharding
    save(out, "prune", mask)

    # 2. three IMP rounds, data-parallel over both processes
    train = train_fn(data, sharded)
    run = jax.jit(  # the data as an argument: no jitted function may close over it
        lambda s, k, d: js.lottery.run(
            s, functools.partial(train, data=d), k, rounds=ROUNDS, fraction=FRACTION
        )
    )
    final, hist = run(state, jax.random.key(KEY), data)
    save(out, "imp", {"mask": final.mask, "params": final.params, "metrics": hist["metrics"]})
    log("prune and imp done")

    # 3. a checkpoint saved by both, restored onto replicated and onto split shardings
    checkpoint.save_state(out / "ckpt", final, extra={"round": ROUNDS})
    restored, extra = checkpoint.load_state(out / "ckpt", state)
    assert extra == {"round": ROUNDS}
    split = jax.tree.map(
        lambda x: jax.device_put(x, sharded) if x.ndim and x.shape[0] % 8 == 0 else x, state
    )
    restored_split, _ = checkpoint.load_state(out / "ckpt", split)
    for a, b in ((restored, state), (restored_split, split)):
        for x, like in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
            assert x.sharding == like.sharding, (x.sharding, like.sharding)
    assert not restored_split.params["w1"].is_fully_addressable
    save(
        out,
        "restored",
        {
            k: {"mask": s.mask, "params": s.params}
            for k, s in (("replicated", restored), ("split", restored_split))
        },
    )
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(final), strict=True):
        assert np.array_equal(js.parallel.to_host(a), js.parallel.to_host(b))
    checkpoint.save_ticket(out / "ticket", final.mask, final.params, {"by": "both"})
    tmask, tparams, _ = checkpoint.load_ticket(out / "ticket", split.params)
    assert tparams["w1"].sharding == split.params["w1"].sharding
    # host copies (the same on every process) are saved too: from process 0
    host = js.parallel.to_host({"mask": final.mask, "params": final.params})
    checkpoint.save_ticket(out / "host_ticket", host["mask"], host["params"])
    hmask, hparams, _ = checkpoint.load_ticket(out / "host_ticket", split.params)
    save(out, "ticket", {"mask": tmask, "params": tparams, "host": (hmask, hparams)})
    log("checkpoints done")

    # 4. run_resumable, uninterrupted: the reference for the killed-and-resumed run
    resumable(args, out, mesh, data, state, out / "clean_ckpt", out / "clean_ticket")

    # 5. process 1 dies in the middle of the run; the others must fail, never hang
    if jax.process_index() == 1:
        log("killing myself")
        os.kill(os.getpid(), signal.SIGKILL)
    log("going on without process 1")
    js.parallel.to_host(run(state, jax.random.key(KEY), data))
    log("ERROR: finished a run without process 1")


def resumable(args, out, mesh, data, state, ckpt: Path, ticket: Path) -> None:
    last = checkpoint.latest_round(ckpt)
    if last is not None:
        log(f"resuming after round {last}")
    final, hist = js.lottery.run_resumable(
        state,
        train_fn(data, js.parallel.batch_sharding(mesh)),
        jax.random.key(KEY),
        rounds=ROUNDS,
        directory=ckpt,
        on_round=lambda r, s, rec: (log(f"round {r} saved"), time.sleep(args.delay)),
        data=data,
        fraction=FRACTION,
    )
    checkpoint.save_ticket(ticket, final.mask, final.params, {"loss": hist["metrics"].tolist()})
    log("resumable done")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--coordinator", required=True)
    parser.add_argument("--num-processes", type=int, required=True)
    parser.add_argument("--process-id", type=int, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--heartbeat", type=int, default=10)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("scenario", choices=("main", "resumable"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scenario == "main":
        main_checks(args, args.out)
    else:
        mesh, data, state = setup(args)
        resumable(args, args.out, mesh, data, state, args.out / "ckpt", args.out / "ticket")
    return 0


if __name__ == "__main__":
    sys.exit(main())
