"""Two real JAX processes × 4 CPU devices on localhost (``jax.distributed``, gloo
collectives): pruning, IMP, checkpoints and resuming across processes, and a dying
worker. Each start of the workers pays JAX's start-up and compilation, so the checks
share three starts: ``main`` (see ``tests/_mh_worker.py``), and a run killed with
SIGKILL and started again."""

import json
import signal
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxsparse as js
from jaxsparse import checkpoint
from tests import _mh_worker as worker
from tests import _multihost as mh

pytestmark = pytest.mark.processes

WORKER = [sys.executable, str(Path(__file__).with_name("_mh_worker.py"))]
# Generous for a loaded 2-core machine (each start takes 15-45 s there); a dead worker
# still fails its peers within the 10 s heartbeat, and a hang is killed at the deadline.
TIMEOUT = 240


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    # one compilation cache for all starts: the restarted run reuses compiled rounds
    cache = tmp_path_factory.mktemp("jax-cache")
    return {
        "JAX_COMPILATION_CACHE_DIR": str(cache),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, env):
    out = tmp_path_factory.mktemp("main")
    workers = mh.start(WORKER, ["--out", str(out), "main"], out, env=env)
    mh.wait(workers, TIMEOUT, expect_failure=True)  # process 1 kills itself at the end
    return out, workers


def _load(out: Path, name: str, workers) -> list[dict]:
    """Both processes' ``name`` results; the workers' output if one is missing."""
    files = [out / f"{name}.p{i}.npz" for i in range(2)]
    if not all(f.exists() for f in files):
        raise mh.WorkersFailed(mh.report(workers, f"no {name} results"))
    return [dict(np.load(f)) for f in files]


def _same_on_both(results: list[dict]) -> dict:
    a, b = results
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].tobytes() == b[k].tobytes(), k
    return a


def _single_process_imp():
    data, params = worker.problem()
    data = jax.tree.map(jnp.asarray, data)
    train = worker.train_fn(data)
    run = jax.jit(
        lambda s, k: js.lottery.run(s, train, k, rounds=worker.ROUNDS, fraction=worker.FRACTION)
    )
    return run(worker.new_state(jax.tree.map(jnp.asarray, params)), jax.random.key(worker.KEY))


def test_global_prune_across_processes_equals_one_process(main_run):
    out, workers = main_run
    got = _same_on_both(_load(out, "prune", workers))
    params = worker.prune_params()
    ref = jax.jit(worker.prune_fn)(params, js.mask_like(params))
    for k in ("a", "b"):
        np.testing.assert_array_equal(got[k], np.asarray(ref[k]))
    assert sum(int(m.sum()) for m in got.values()) == 1792 - round(0.37 * 1792)


def test_imp_across_processes_equals_one_process(main_run):
    out, workers = main_run
    got = _same_on_both(_load(out, "imp", workers))
    ref, ref_hist = _single_process_imp()
    for k in ("w1", "b1", "w2", "b2"):
        np.testing.assert_array_equal(got[f"mask/{k}"], np.asarray(ref.mask[k]), err_msg=k)
        np.testing.assert_allclose(got[f"params/{k}"], ref.params[k], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["metrics"], ref_hist["metrics"], rtol=1e-4, atol=1e-6)
    alive = sum(int(got[f"mask/{k}"].sum()) for k in ("w1", "w2"))
    assert 0 < alive < 16 * 32 + 32


def test_checkpoint_saved_by_both_restores_onto_the_mesh(main_run):
    out, workers = main_run
    imp = _same_on_both(_load(out, "imp", workers))
    restored = _same_on_both(_load(out, "restored", workers))
    for layout in ("replicated", "split"):  # the worker checked each leaf's sharding
        for k in ("w1", "b1", "w2", "b2"):
            for field in ("params", "mask"):
                np.testing.assert_array_equal(
                    restored[f"{layout}/{field}/{k}"], imp[f"{field}/{k}"]
                )
    ticket = _same_on_both(_load(out, "ticket", workers))
    for k in ("w1", "w2"):
        np.testing.assert_array_equal(ticket[f"mask/{k}"], imp[f"mask/{k}"])
        np.testing.assert_array_equal(ticket[f"params/{k}"], imp[f"params/{k}"])
    for i, field in enumerate(("mask", "params")):
        for k in ("w1", "b1", "w2", "b2"):
            np.testing.assert_array_equal(ticket[f"host/{i}/{k}"], imp[f"{field}/{k}"])
    # what the two processes wrote is one ordinary checkpoint: this process reads it
    _, params = worker.problem()
    like = worker.new_state(jax.tree.map(jnp.asarray, params))
    state, extra = checkpoint.load_state(out / "ckpt", like)
    assert extra == {"round": worker.ROUNDS} and int(state.round) == worker.ROUNDS
    for k in ("w1", "w2"):
        np.testing.assert_array_equal(np.asarray(state.mask[k]), imp[f"mask/{k}"])
    assert not list(out.glob(".*tmp-*"))  # no temp directories left behind


def test_dead_worker_fails_the_other_within_the_heartbeat(main_run):
    _, (w0, w1) = main_run
    assert w1.returncode == -signal.SIGKILL, mh.report([w0, w1], "process 1 did not die")
    log = w0.output(100_000)
    assert "going on without process 1" in log
    assert w0.returncode != 0 and "ERROR: finished" not in log
    # gloo reports the lost peer at once; the distributed runtime ends the process when
    # the heartbeat (10 s) expires
    assert "Gloo" in log or "JAX distributed service detected fatal errors" in log, log[-3000:]
    assert w0.ended - w1.ended < 60, mh.report([w0, w1], "the survivor took too long")


def test_killed_on_both_processes_resumes_to_the_same_ticket(main_run, env, tmp_path):
    clean, _ = main_run
    assert (clean / "clean_ticket").exists(), "the main run made no uninterrupted ticket"
    args = ["--out", str(tmp_path), "resumable"]
    # a pause after each round's checkpoint, so the kill lands between rounds 1 and 2
    # (or, on a machine too loaded to notice within the pause, between 2 and 3)
    victims = mh.start(WORKER, [*args[:2], "--delay", "3", args[2]], tmp_path / "killed", env=env)
    try:
        mh.wait(
            victims, TIMEOUT, until=lambda: (checkpoint.latest_round(tmp_path / "ckpt") or 0) >= 1
        )
    finally:
        mh.kill(victims)
    assert [w.returncode for w in victims] == [-signal.SIGKILL] * 2
    killed_at = checkpoint.latest_round(tmp_path / "ckpt")
    assert killed_at in (1, 2) and not (tmp_path / "ticket").exists()

    resumed = mh.run(WORKER, args, tmp_path / "resumed", TIMEOUT, env=env)
    assert all(f"resuming after round {killed_at}" in w.output() for w in resumed)
    like = jax.tree.map(jnp.asarray, worker.problem()[1])
    m1, p1, meta1 = checkpoint.load_ticket(tmp_path / "ticket", like)
    m2, p2, meta2 = checkpoint.load_ticket(clean / "clean_ticket", like)
    for a, b in zip(jax.tree.leaves((m1, p1)), jax.tree.leaves((m2, p2)), strict=True):
        assert np.asarray(a).tobytes() == np.asarray(b).tobytes()
    assert meta1 == meta2 and np.shape(meta1["loss"]) == (worker.ROUNDS, 1, worker.STEPS)


# the quick study (the 8x8 digits) for one round: compiling it is most of its cost, and
# the one-process run is test_experiment_lottery's mesh run (a session shares it)
STUDY = ["--quick", "--mesh", "--rounds", "1"]


def test_lottery_command_as_two_processes_matches_one(env, tmp_path, quick_run_of):
    from experiments.lottery.config import LotteryConfig
    from experiments.lottery.run import initial_state

    two = tmp_path / "two"
    command = [sys.executable, "-m", "experiments.lottery"]
    workers = mh.start(command, [*STUDY, "--out", str(two)], tmp_path / "logs", env=env)
    try:  # the one-process run meanwhile: much of each is single-threaded compiling
        one = quick_run_of("lottery", *STUDY[1:]).root
    finally:
        mh.wait(workers, TIMEOUT)

    # process 0 alone shows the bar and the table; both computed
    logs = [w.output(100_000) for w in workers]
    assert "IMP rounds" in logs[0] and "| round | % weights |" in logs[0]
    assert "IMP rounds" not in logs[1] and "| round |" not in logs[1]
    (d1,), (d2,) = sorted(one.glob("lottery-*")), sorted(two.glob("lottery-*"))
    assert d1.name == d2.name  # the process flags are not part of the configuration
    timing = json.loads((d2 / "timing.json").read_text())
    assert (timing["devices"], timing["processes"]) == (8, 2)
    r1 = json.loads((d1 / "results.json").read_text())
    r2 = json.loads((d2 / "results.json").read_text())
    # the README's --mesh tolerance: the same layer sizes, per-seed accuracies within 2
    # points, masks equal but for < 1% of the weights (near-threshold ties that the
    # last bits of a differently ordered all-reduce can swap)
    a, b = r1["rounds"][0], r2["rounds"][0]
    assert a["layer_alive"] == b["layer_alive"]
    for arm in r1["arms"]:
        for key in ("early_stop_acc", "final_acc"):
            np.testing.assert_allclose(
                a["arms"][arm]["per_seed"][key], b["arms"][arm]["per_seed"][key], atol=0.02
            )
    like = initial_state(LotteryConfig(**LotteryConfig.QUICK))
    s1, _ = checkpoint.load_state(d1 / "checkpoints" / "round_0000", like)
    s2, _ = checkpoint.load_state(d2 / "checkpoints" / "round_0000", like)
    for m1, m2 in zip(jax.tree.leaves(s1.mask), jax.tree.leaves(s2.mask), strict=True):
        assert np.mean(np.asarray(m1) != np.asarray(m2)) < 0.01
    _, _, meta = checkpoint.load_ticket(d2 / "ticket", jax.tree.map(lambda x: x[0], like.params))
    assert meta["round"] == 0 and meta == r2["best_ticket"]


def test_lottery_command_ends_promptly_when_a_peer_is_killed(env, tmp_path):
    # The command as a user runs it. Where the kill lands decides how the survivor
    # learns of it: in a gloo collective (a round) the error comes at once and the
    # process exits 1 without JAX's shutdown barrier; in a coordination-service barrier
    # (a checkpoint) only the heartbeat tells, and the runtime aborts the process. Same
    # shapes as above, so the compilation cache serves the round.
    heartbeat = 10
    command = [sys.executable, "-m", "experiments.lottery", "--heartbeat", str(heartbeat)]
    args = [*STUDY, "--rounds", "40", "--out", str(tmp_path / "runs")]
    w0, w1 = workers = mh.start(command, args, tmp_path / "logs", env=env)
    deadline = heartbeat + 30  # slack for a loaded 2-core machine
    try:
        mh.wait(workers, TIMEOUT, until=lambda: "IMP rounds" in w0.output())
        assert w0.proc.poll() is None, mh.report(workers, "the run ended before the kill")
        mh.kill([w1])
        mh.wait([w0], deadline, expect_failure=True)  # raises (and kills) past the deadline
    finally:
        mh.kill(workers)
    log = w0.output(100_000)
    assert w0.returncode != 0, mh.report(workers, "the survivor should fail")
    at_once = w0.returncode == 1 and "process 0 stops here" in log and "Gloo" in log
    by_heartbeat = "JAX distributed service detected fatal errors" in log
    assert at_once or by_heartbeat, log[-3000:]
    assert w0.ended - w1.ended < deadline
