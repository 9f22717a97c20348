"""End-to-end tests of the transfer study (``jaxsparse transfer``) in quick mode: the
premise check, that the arms are fair (equal updates, one starting point, learning rates
chosen on validation), the paired differences, exact sparsities, resume and bad flags."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.stats import paired
from experiments.transfer.config import DENSE_ARMS, SPARSE_ARMS
from experiments.transfer.net import CNN1D
from jaxsparse import checkpoint

N_BACKBONE = 5 * 16 + 5 * 16 * 16 + 160 * 64  # the pruned kernels of the default CNN1D


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("transfer")


def _alive(rounds, fraction=0.2):
    alive, out = N_BACKBONE, [N_BACKBONE]
    for _ in range(rounds):
        alive -= round(fraction * alive)  # global: exactly round(p * alive) a round
        out.append(alive)
    return out


def _tasks(run):
    return [(name, t, run.results["history"]["tasks"][name]) for name, t in
            run.results["tasks"].items()]  # fmt: skip


def test_outputs_and_exact_sparsities(quick_run):
    cfg, res = quick_run.config, quick_run.results
    quick_run.assert_written("transfer.png")
    rounds = cfg.round_list()
    want = [a / N_BACKBONE for a in _alive(rounds[-1])]
    assert res["slots"] == [[a, 0] for a in DENSE_ARMS] + [
        [a, r] for r in rounds for a in SPARSE_ARMS
    ]
    assert set(res["tasks"]) == set(cfg.task_list())
    for _, task, hist in _tasks(quick_run):
        for key, check in hist["start_checks"].items():
            r = key.split("@")[1]
            assert check["density"] == pytest.approx(want[int(r)], abs=1e-6), key
            assert task["arms"][key]["sparsity_pct"] == pytest.approx(100 * (1 - want[int(r)]))
        for a in task["arms"].values():
            assert len(a["test"]) == len(a["train"]) == cfg.seeds
            assert all(0.0 <= x <= 1.0 for x in a["test"] + a["train"])
    csv = (quick_run.dir / "results.csv").read_text().strip().splitlines()
    assert len(csv) == 1 + len(cfg.task_list()) * len(res["slots"])


def test_every_arm_trains_the_same_number_of_updates(quick_run):
    cfg = quick_run.config
    for _, task, hist in _tasks(quick_run):
        updates = np.asarray(hist["eval"]["updates"])  # (slot, lr, seed), counted by the run
        assert updates.shape == (len(quick_run.results["slots"]), len(cfg.lr_list()), cfg.seeds)
        assert np.all(updates == cfg.steps)
        assert all(a["updates"] == [cfg.steps] for a in task["arms"].values())
        # IMP's search on the target is counted apart: r trainings for round r's mask
        assert task["search_steps_on_target"] == {str(r): r * cfg.steps for r in cfg.round_list()}


def test_arms_start_from_the_same_point(quick_run):
    """Every arm's initial weights equal its reference at the alive positions (the
    pre-trained backbone with one shared new head; the scratch init for the two
    random-init arms) and are exactly zero where pruned."""
    for _, _, hist in _tasks(quick_run):
        for key, check in hist["start_checks"].items():
            arm = key.split("@")[0]
            scratch = arm in ("scratch", "reinit")
            assert check["start"] == ("scratch init" if scratch else "pre-trained + new head")
            assert check["alive_vs_start"] == 0.0, key
            assert check["pruned_abs"] == 0.0, key


def test_learning_rate_is_chosen_on_validation(quick_run):
    cfg = quick_run.config
    lrs = cfg.lr_list()
    for _, task, hist in _tasks(quick_run):
        ev = hist["eval"]
        for i, (arm, r) in enumerate(quick_run.results["slots"]):
            a = task["arms"][f"{arm}@{r}"]
            best = int(np.argmax(np.mean(ev["val_acc"][i], axis=1)))
            assert a["lr"] == lrs[best]
            assert a["test"] == pytest.approx(ev["test_acc"][i][best])
            assert a["train"] == pytest.approx(ev["train_acc"][i][best])


def test_premise_is_computed_and_reported(quick_run):
    """The premise (pre-trained dense fine-tuning beats dense from scratch by the stated
    gain) is the paired difference of the two, and gates the transfer verdicts."""
    cfg = quick_run.config
    table = (quick_run.dir / "table.md").read_text()
    for name, task, _ in _tasks(quick_run):
        pr, arms = task["premise"], task["arms"]
        p = paired(arms["dense@0"]["test"], arms["scratch@0"]["test"])
        assert pr["diff"] == pytest.approx(p.as_dict())
        assert pr["holds"] == (p.lo > cfg.premise_gain / 100)
        assert f"**target {name}** — premise: (a) dense fine-tuned − dense from scratch = " \
            f"{p.format(100)} points" in table  # fmt: skip
        verdicts = [task["versus_dense"][f"transfer@{r}"]["verdict"] for r in cfg.round_list()]
        verdicts += [v["verdict"] for vs in task["ticket_versus"].values() for v in vs.values()]
        if pr["holds"]:
            assert "untestable (premise failed)" not in verdicts
        else:
            assert set(verdicts) == {"untestable (premise failed)"}
            assert task["matches_dense_up_to_sparsity_pct"] is None


def test_differences_are_paired_by_seed(quick_run):
    m = quick_run.config.margin / 100
    for _, task, _ in _tasks(quick_run):
        dense = task["arms"]["dense@0"]["test"]
        for key, vd in task["versus_dense"].items():
            p = paired(task["arms"][key]["test"], dense)
            assert vd["diff"] == pytest.approx(p.as_dict())
            if not key.startswith("transfer") or task["premise"]["holds"]:
                assert vd["verdict"] == p.verdict(m)


def test_saved_ticket_is_the_last_source_mask(quick_run):
    d, cfg = quick_run.dir, quick_run.config
    like = CNN1D().init(jax.random.key(0), jnp.zeros((1, 40)))["params"]
    mask, params, meta = checkpoint.load_ticket(d / "ticket", like)
    backbone = ("conv_0", "conv_1", "hidden_0")
    alive = sum(int(np.sum(mask[k]["kernel"])) for k in backbone)
    assert alive == _alive(cfg.round_list()[-1])[-1]
    assert 100 * alive / N_BACKBONE == pytest.approx(meta["pct_remaining"])
    assert bool(np.all(mask["output"]["kernel"]))  # the head is never pruned
    for m, p in zip(jax.tree.leaves(mask), jax.tree.leaves(params)):
        assert not np.any(np.asarray(p)[~np.asarray(m)])


def test_resume_skips_saved_stages(quick_run):
    stages = ["source", *(f"task_{t}" for t in quick_run.config.task_list())]
    assert quick_run.resume(stages) == quick_run.results


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--tasks", "cifar"], "--tasks"),
        (["--tasks", "noisy,noisy"], "--tasks"),
        (["--rounds", "3,2"], "--rounds"),
        (["--rounds", "0,2"], "--rounds"),
        (["--rounds", "two"], "--rounds"),
        (["--lrs", "1e-3,0"], "--lrs"),
        (["--lrs", "fast"], "--lrs"),
        (["--target-train", "1005"], "--target-train"),
        (["--batch-size", "5000"], "--batch-size"),
        (["--quick", "--target-train", "10"], "--batch-size: must be <= the smaller"),
        (["--quick", "--target-train", "10"], "got 20 (from --quick)"),
        (["--fraction", "1.5"], "--fraction"),
        (["--margin", "-1"], "--margin"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["transfer", *argv])
