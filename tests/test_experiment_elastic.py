"""End-to-end tests of the elastic study (``jaxsparse elastic``) in quick mode: outputs,
exact densities of every arm, the block mappings, resume, and bad flags."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.elastic.model import PRUNABLE, ResNet
from jaxsparse.filters import leaf_paths


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("elastic")


def _params(blocks: int, width: int = 8):
    """Shapes only (jax.eval_shape): an eager init of the ResNet is slow on a CPU."""
    init = ResNet(blocks=blocks, width=width).init
    return jax.eval_shape(init, jax.random.key(0), jnp.zeros((1, 196)))["params"]


def _n_prunable(blocks: int, width: int) -> int:
    params = _params(blocks, width)
    leaves = jax.tree.leaves(params)
    return sum(x.size for p, x in zip(leaf_paths(params), leaves) if re.search(PRUNABLE, p))


def test_model_names_its_blocks_for_the_default_regex():
    params = _params(2)
    paths = leaf_paths(params)
    assert "stage0_block1/conv2/kernel" in paths and "stage2_block0/shortcut/kernel" in paths
    assert "stage0_block0/shortcut/kernel" not in paths  # stage 0 keeps its resolution
    out = jax.eval_shape(ResNet(blocks=2).apply, {"params": params}, jnp.ones((3, 196)))
    assert out.shape == (3, 10)
    assert params["stage1_block0"]["conv1"]["kernel"].shape == (3, 3, 8, 16)


def test_outputs_and_exact_densities(quick_run):
    d, res = quick_run.dir, quick_run.results
    cfg = quick_run.config
    quick_run.assert_written("elastic.png")
    # the block mappings: 2 -> 1 squeezes to block 0 only, 2 -> 3 stretches block 1 twice
    assert res["mappings"]["1"] == {"interleave": [0], "keep_first": [0], "keep_last": [0]}
    assert res["mappings"]["3"] == {
        "interleave": [0, 1, 1],
        "cycle": [0, 1, 1],
        "replicate_last": [0, 1, 1],
    }
    for key, t in {"2": res["source"], **res["targets"]}.items():
        n = _n_prunable(int(key), cfg.width)
        alive = [n]
        for _ in range(cfg.rounds):
            alive.append(alive[-1] - round(cfg.fraction * alive[-1]))
        for r, row in enumerate(t["rounds"]):
            arms = row["arms"]
            assert arms["imp"]["pct_remaining"] == pytest.approx(100 * alive[r] / n, abs=1e-4)
            for st in arms.values():
                assert len(st["per_seed"]) == cfg.seeds
                assert all(0.0 <= a <= 1.0 for a in st["per_seed"])
            if "interleave" in arms:  # shuffle and random keep the interleaved densities
                for arm in ("shuffle", "random"):
                    assert arms[arm]["pct_remaining"] == pytest.approx(
                        arms["interleave"]["pct_remaining"], abs=1e-4
                    )
            if r == 0:
                assert all(st["pct_remaining"] == pytest.approx(100.0) for st in arms.values())
    assert res["targets"]["1"]["arms"] == [
        "imp",
        "interleave",
        "keep_first",
        "keep_last",
        "shuffle",
        "random",
    ]
    # squeezing 2 -> 1 keeps only block 0 in every strategy: the same ticket, same result
    for row in res["targets"]["1"]["rounds"]:
        a = row["arms"]
        for s in ("keep_first", "keep_last"):
            np.testing.assert_allclose(a[s]["per_seed"], a["interleave"]["per_seed"])
    steps = res["targets"]["3"]["rounds"][-1]["steps"]
    assert steps["imp_at_target"] == (cfg.rounds + 1) * cfg.steps
    assert steps["elastic_at_target"] == cfg.steps
    assert len((d / "results.csv").read_text().strip().splitlines()) == 1 + (cfg.rounds + 1) * (
        2 + 6 + 6
    )


def test_resume_skips_saved_stages(quick_run):
    assert quick_run.resume(["source", "depth_1", "depth_3"]) == quick_run.results


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--targets", "2,2"], "--targets"),
        (["--targets", "x"], "--targets: must be comma-separated integers"),
        (["--targets", "3"], "must not repeat the source depth"),
        (["--source-blocks", "1", "--targets", "3"], "--source-blocks"),
        (["--steps", "100", "--eval-every", "30"], "--eval-every"),
        (["--rewind-step", "200"], "--rewind-step"),
        (["--quick", "--steps", "50"], "got 15 (from --quick)"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["elastic", *argv])
