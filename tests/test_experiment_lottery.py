"""End-to-end tests of the lottery-ticket study (``jaxsparse lottery``) in quick mode:
outputs, the pruning schedule, resuming after a kill, the mesh run, and bad flags."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import cli, models
from experiments.lottery.config import LotteryConfig
from experiments.lottery.run import initial_state
from jaxsparse import checkpoint

REPO = Path(__file__).resolve().parents[1]
QUICK = LotteryConfig.QUICK


def _run_dir(root: Path) -> Path:
    (d,) = sorted(root.glob("lottery-*"))
    return d


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    """One uninterrupted quick run, in process; shared by the tests below."""
    return quick_run_of("lottery")


def _expected_alive(size: int, fraction: float, rounds: int) -> list[int]:
    alive, out = size, []
    for _ in range(rounds):
        out.append(alive)
        alive -= round(fraction * alive)  # exactly round(p * alive) pruned a round
    return out


def test_quick_run_outputs(quick_run):
    d, res = quick_run.dir, quick_run.results
    cfg = quick_run.config
    quick_run.assert_written("lottery.png")
    assert (d / "lottery.png").stat().st_size > 10_000

    rows = res["rounds"]
    assert [r["round"] for r in rows] == list(range(cfg.rounds))
    assert res["arms"] == ["ticket", "reinit", "reprune"]

    # per-layer densities: n_r = n_{r-1} - round(p * n_{r-1}), p = 0.2 hidden, 0.1 output
    assert res["rates"] == {"hidden_0/kernel": 0.2, "hidden_1/kernel": 0.2, "output/kernel": 0.1}
    for path, size in res["prunable"].items():
        p = res["rates"][path]
        expected = _expected_alive(size, p, cfg.rounds)
        got = [r["layer_alive"][path] for r in rows]
        assert got == expected, path
        np.testing.assert_allclose(
            np.array(got) / size, (1 - p) ** np.arange(cfg.rounds), atol=1 / size
        )
    for path, size in res["layer_sizes"].items():  # biases are never pruned
        if path not in res["prunable"]:
            assert all(r["layer_alive"][path] == size for r in rows)
    total = sum(res["prunable"].values())
    for r in rows:
        want = 100 * sum(r["layer_alive"][p] for p in res["prunable"]) / total
        for arm in res["arms"]:  # all three arms train at the same density
            assert r["arms"][arm]["pct_remaining"] == pytest.approx(want, abs=1e-4)

    for r in rows:
        for arm in r["arms"].values():
            for key in ("early_stop_acc", "final_acc"):
                assert 0.0 <= arm[key] <= 1.0
                assert all(0.0 <= a <= 1.0 for a in arm["per_seed"][key])
                assert len(arm["per_seed"][key]) == cfg.seeds
            assert 0 < arm["early_stop_iter"] <= cfg.steps
    dense = rows[0]["arms"]["ticket"]
    assert dense["early_stop_acc"] > 0.5 and dense["final_acc"] > 0.5  # chance is 0.1

    for r in rows:  # training accuracy at early stopping; the same steps for every arm
        for arm in r["arms"].values():
            assert all(0.0 <= a <= 1.0 for a in arm["per_seed"]["early_stop_train_acc"])
            assert arm["steps"] == cfg.steps
    assert dense["early_stop_train_acc"] > 0.5

    csv_lines = (d / "results.csv").read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 3 * cfg.rounds
    table = (d / "table.md").read_text()
    assert "| round | % weights |" in table and "±" in table


def test_paired_differences_by_value(quick_run):
    """Each round's paired differences are the per-seed differences' mean and Student-t
    95% interval (computed here by hand), "dense" being round 0's ticket of each seed;
    the claims are read from their verdicts."""
    from scipy import stats as sps

    rows = quick_run.results["rounds"]
    dense = np.array(rows[0]["arms"]["ticket"]["per_seed"]["early_stop_acc"])
    for r in rows:
        seeds = {arm: r["arms"][arm]["per_seed"] for arm in ("ticket", "reinit", "reprune")}
        want = {
            "ticket - dense": np.array(seeds["ticket"]["early_stop_acc"]) - dense,
            "ticket - reinit": np.subtract(
                seeds["ticket"]["early_stop_acc"], seeds["reinit"]["early_stop_acc"]
            ),
            "ES iter, ticket - reinit": np.subtract(
                seeds["ticket"]["early_stop_iter"], seeds["reinit"]["early_stop_iter"]
            ),
        }
        for name, d in want.items():
            got = r["paired"][name]
            n = len(d)
            half = sps.t.ppf(0.975, n - 1) * d.std(ddof=1) / np.sqrt(n)
            assert got["n"] == n == quick_run.config.seeds
            assert got["mean"] == pytest.approx(d.mean(), abs=1e-9)
            if half > 0:
                assert got["lo"] == pytest.approx(d.mean() - half, rel=1e-9)
                assert got["hi"] == pytest.approx(d.mean() + half, rel=1e-9)
    assert rows[0]["paired"]["ticket - dense"]["mean"] == 0.0
    claims = quick_run.results["claims"]
    assert claims["margin_points"] == quick_run.config.best_tolerance
    beats = [r for r in rows[1:] if r["paired"]["ticket - reinit"]["lo"] > 0]
    assert len(claims["beats_reinit_at_pct"]) == len(beats)
    assert "ticket - reinit (points)" in (quick_run.dir / "table.md").read_text()


def test_ticket_loads_with_its_sparsity(quick_run):
    d, res = quick_run.dir, quick_run.results
    best = res["best_ticket"]
    like = models.build("lenet300", (8, 8, 1)).init(jax.random.key(0), jnp.zeros((1, 64)))
    like = like["params"]
    mask, params, meta = checkpoint.load_ticket(d / "ticket", like)
    assert meta == best
    assert meta["round"] == max(
        r["round"]
        for r in res["rounds"]
        if r["arms"]["ticket"]["early_stop_val_acc"]
        >= res["rounds"][0]["arms"]["ticket"]["early_stop_val_acc"] - 0.005
    )
    # the ticket holds the initial weights (k = 0) where alive, exactly
    init = initial_state(LotteryConfig(**QUICK)).params
    init = jax.tree.map(lambda x: np.asarray(x[0]), init)
    for m, p, p0 in zip(jax.tree.leaves(mask), jax.tree.leaves(params), jax.tree.leaves(init)):
        np.testing.assert_array_equal(np.asarray(p), np.where(np.asarray(m), p0, 0.0))
    row = res["rounds"][meta["round"]]
    for path, m in zip(res["layer_sizes"], jax.tree.leaves(mask)):
        assert int(np.sum(m)) == row["layer_alive"][path], path
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)):
        assert not np.any(np.asarray(p)[~np.asarray(m)])  # pruned weights exactly 0
    kept = sum(int(np.sum(mask[k.split("/")[0]]["kernel"])) for k in res["prunable"])
    assert 100 * kept / sum(res["prunable"].values()) == pytest.approx(meta["pct_remaining"])


@pytest.mark.processes
def test_resume_after_kill_gives_identical_results(quick_run, tmp_path):
    uninterrupted = quick_run.results
    root = tmp_path / "killed"
    env = {
        **os.environ,
        "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        # both processes reuse the round the in-process quick run compiled (same cache)
        "JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir
        or str(tmp_path / "jax-cache"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    cmd = [sys.executable, "-m", "experiments.lottery", "--quick", "--out", str(root)]
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 120
    try:
        while not list(root.glob("lottery-*/checkpoints/round_0000")):
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            assert time.monotonic() < deadline, "no round checkpoint appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    d = _run_dir(root)
    assert not (d / "results.json").exists()
    done = checkpoint.latest_round(d / "checkpoints")
    assert done is not None and done < QUICK["rounds"] - 1

    out = subprocess.run(
        [*cmd, "--resume"], cwd=REPO, env=env, capture_output=True, text=True, check=True
    )
    assert f"resuming from round {done}" in out.stdout
    resumed = json.loads((d / "results.json").read_text())
    assert resumed == uninterrupted
    assert json.loads((d / "timing.json").read_text())["resumed_from"] == done


def test_mesh_matches_single_device(quick_run, quick_run_of):
    assert len(jax.devices()) == 8  # conftest's fake CPU devices
    d_single, single = quick_run.dir, quick_run.results
    # one round is enough: the dense training and the first pruning (the same run as
    # test_multihost's one-process run: a session shares it)
    mesh_run = quick_run_of("lottery", "--mesh", "--rounds", "1")
    d_mesh, mesh = mesh_run.dir, mesh_run.results
    assert (
        mesh["config"]["mesh"] and json.loads((d_mesh / "timing.json").read_text())["devices"] == 8
    )

    a, b = single["rounds"][0], mesh["rounds"][0]
    assert a["layer_alive"] == b["layer_alive"]
    for arm in single["arms"]:
        for key in ("early_stop_acc", "final_acc"):
            np.testing.assert_allclose(
                a["arms"][arm]["per_seed"][key], b["arms"][arm]["per_seed"][key], atol=0.02
            )
    # The pruned masks after round 0: same sizes exactly; the same weights up to the
    # few near the threshold whose order the last bits of the all-reduced gradients
    # (a different summation order) can swap.
    like = initial_state(LotteryConfig(**QUICK))
    s1, _ = checkpoint.load_state(d_single / "checkpoints" / "round_0000", like)
    s2, _ = checkpoint.load_state(d_mesh / "checkpoints" / "round_0000", like)
    for m1, m2 in zip(jax.tree.leaves(s1.mask), jax.tree.leaves(s2.mask)):
        m1, m2 = np.asarray(m1), np.asarray(m2)
        assert (
            m1.sum(axis=tuple(range(1, m1.ndim))) == m2.sum(axis=tuple(range(1, m2.ndim)))
        ).all()
        assert np.mean(m1 != m2) < 0.01
    for p1, p2 in zip(jax.tree.leaves(s1.rewind_params), jax.tree.leaves(s2.rewind_params)):
        np.testing.assert_array_equal(p1, p2)  # the same initial weights


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--data", "cifar"], "--data"),
        (["--model", "resnet"], "--model"),
        (["--fraction", "1.5"], "--fraction"),
        (["--seeds", "0"], "--seeds"),
        (["--steps", "ten"], "--steps"),
        (["--steps", "100", "--eval-every", "30"], "--eval-every"),
        (["--bogus"], "--bogus"),
        (["--batch-size", "5000"], "--batch-size: must be <= the 3500 training examples"),
        (["--data", "digits", "--batch-size", "1300"], "1257 training examples"),
        (["--quick", "--steps", "30"], "got 25 (from --quick)"),
        (["--coordinator", "127.0.0.1:1234"], "--coordinator: needs --mesh"),
        (["--mesh", "--num-processes", "2"], "--num-processes: needs --coordinator HOST:PORT"),
        (
            ["--mesh", "--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id: must be < --num-processes (2)",
        ),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["lottery", *argv])


def test_help_lists_studies(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    assert "lottery" in capsys.readouterr().out
