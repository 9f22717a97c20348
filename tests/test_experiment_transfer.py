"""End-to-end tests of the transfer study (``jaxsparse transfer``) in quick mode:
outputs and their values, exact sparsities, resume, and bad flags."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import models
from jaxsparse import checkpoint

N_BACKBONE = 784 * 300 + 300 * 100  # the pruned kernels of LeNet-300-100


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("transfer")


def _alive(rounds, fraction=0.2):
    alive, out = N_BACKBONE, [N_BACKBONE]
    for _ in range(rounds):
        alive -= round(fraction * alive)  # global: exactly round(p * alive) a round
        out.append(alive)
    return out


def test_outputs_and_exact_sparsities(quick_run):
    d, res = quick_run.dir, quick_run.results
    cfg = quick_run.config
    quick_run.assert_written("transfer.png")
    assert res["arms"] == ["imp", "transfer", "oneshot", "random", "reinit"]
    assert set(res["tasks"]) == {"mnist5-9", "digits28"}
    want = [100 * a / N_BACKBONE for a in _alive(cfg.rounds)]
    assert [s["pct_remaining"] for s in res["source"]] == pytest.approx(want[:-1], abs=1e-4)
    for task in res["tasks"].values():
        assert [r["round"] for r in task["rounds"]] == list(range(cfg.rounds + 1))
        for r, row in zip(range(cfg.rounds + 1), task["rounds"]):
            for arm, st in row["arms"].items():  # every arm at the ticket's exact density
                assert st["pct_remaining"] == pytest.approx(want[r], abs=1e-4), (r, arm)
                assert len(st["per_seed"]) == cfg.seeds
                assert all(0.0 <= a <= 1.0 for a in st["per_seed"])
                assert st["acc"] == pytest.approx(np.mean(st["per_seed"]))
        dense = task["rounds"][0]["arms"]
        assert dense["imp"]["acc"] > 0.5  # chance is 0.2 or 0.1
        # round 0: (b), (c), (d), (e) all start from the pre-trained weights, dense, same data
        for arm in ("transfer", "oneshot", "random"):
            np.testing.assert_allclose(dense[arm]["per_seed"], dense["imp"]["per_seed"])
        assert task["dense"] == dense["imp"]
        up = task["matches_dense_up_to_round"]
        assert all(r in task["matching_rounds"] for r in range(1, up + 1))
        c = task["compute"][-1]
        assert c["downstream_steps_imp"] == (cfg.rounds + 1) * cfg.steps
        assert c["saved_steps_per_task"] == cfg.rounds * cfg.steps
    csv = (d / "results.csv").read_text().strip().splitlines()
    assert len(csv) == 1 + 2 * (cfg.rounds + 1) * 5
    assert "matches dense (within one seed-std) up to" in (d / "table.md").read_text()
    assert "matched" in res["transfer_report_seed0"]["digits28"]


def test_saved_ticket_is_the_last_source_mask(quick_run):
    d, res = quick_run.dir, quick_run.results
    like = models.LeNet300(num_classes=5).init(jax.random.key(0), jnp.zeros((1, 784)))["params"]
    mask, params, meta = checkpoint.load_ticket(d / "ticket", like)
    alive = sum(int(np.sum(mask[k]["kernel"])) for k in ("hidden_0", "hidden_1"))
    assert alive == _alive(res["config"]["rounds"])[-1]
    assert 100 * alive / N_BACKBONE == pytest.approx(meta["pct_remaining"])
    assert bool(np.all(mask["output"]["kernel"]))  # the head is never pruned
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)):
        assert not np.any(np.asarray(p)[~np.asarray(m)])


def test_resume_skips_saved_stages(quick_run):
    stages = ["source", "task_mnist5-9", "task_digits28"]
    assert quick_run.resume(stages) == quick_run.results


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--tasks", "cifar"], "--tasks"),
        (["--tasks", "digits28,digits28"], "--tasks"),
        (["--steps", "100", "--eval-every", "30"], "--eval-every"),
        (["--quick", "--steps", "50"], "got 30 (from --quick)"),
        (["--fraction", "1.5"], "--fraction"),
        (["--batch-size", "2000"], "--batch-size"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["transfer", *argv])
