"""End-to-end tests of the random-pruning study (``jaxsparse random-pruning``) in quick
mode: output files and their values, exact mask counts, resuming, and bad flags."""

import numpy as np
import pytest

from experiments.random_pruning import nets
from experiments.random_pruning.run import cells


@pytest.fixture(scope="module")
def quick_run(quick_run_of):
    return quick_run_of("random-pruning")


def test_quick_run_outputs(quick_run):
    d, res = quick_run.dir, quick_run.results
    cfg = quick_run.config
    quick_run.assert_written("gap_vs_width.png", "sparse_vs_small.png")
    nets_run = [(r["family"], r["depth"], r["width"]) for r in res["networks"]]
    assert nets_run == cells(cfg) == [
        ("mlp", 2, 0.5), ("mlp", 2, 1.0), ("conv", 2, 0.5)
    ]  # fmt: skip
    for rec in res["networks"]:
        arms = [tuple(a) for a in rec["arms"]]
        assert arms[0] == ("dense", 0.0) and arms[-1] == ("small", 0.9)
        acc = np.asarray(rec["test_acc"])
        assert acc.shape == (len(arms), cfg.seeds)
        assert ((acc >= 0) & (acc <= 1)).all()
        alive = np.asarray(rec["alive"])
        n = rec["n_kernel"]
        assert (alive[0] == n).all()  # dense keeps every kernel weight
        for a, (rule, s) in enumerate(arms):
            if rule in ("uniform", "er", "erk", "uniform_plus", "snip"):
                # per-layer counts are exact, so the global count is within a weight a layer
                assert np.abs(alive[a] - (1 - s) * n).max() <= 4, (rule, s)
        # uniform+ cannot keep an MLP's first layer dense at 90%: skipped and said why
        skipped = {(x["rule"], x["sparsity"]) for x in rec["skipped"]}
        assert (("uniform_plus", 0.9) in skipped) == (rec["family"] == "mlp")
        # the small dense net has about as many weights as the sparse ones
        c, h = rec["small"]["0.9"]
        assert alive[-1][0] == nets.kernel_count(rec["family"], rec["depth"], c, h)
    assert res["networks"][1]["test_acc"][0][0] > 0.5  # dense MLP x1 learns (chance 0.1)
    table = (d / "table.md").read_text()
    assert "**Sparsity 90%**" in table and "± " in table and "n/a" in table


def test_resume_skips_done_networks(quick_run):
    again = quick_run.resume([r["network"] for r in quick_run.results["networks"]])
    assert again["rows"] == quick_run.results["rows"]


def test_small_net_embeds_exactly():
    import jax
    import jax.numpy as jnp

    small = nets.build("conv", 2, 2, 5)
    wide = nets.build("conv", 2, 4, 8)
    x = jax.random.uniform(jax.random.key(0), (3, 196))
    ps = small.init(jax.random.key(1), x)["params"]
    ps = jax.tree.map(lambda p: p + 0.1, ps)  # non-zero biases too
    pw = wide.init(jax.random.key(2), x)["params"]
    emb = nets.embed(ps, pw, "conv")
    np.testing.assert_allclose(
        wide.apply({"params": emb}, x), small.apply({"params": ps}, x), rtol=1e-5, atol=1e-5
    )
    assert nets.kernel_count("conv", 2, 2, 5) == sum(
        int(jnp.size(v)) for v in jax.tree.leaves(ps) if v.ndim >= 2
    )


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--sparsities", "0.9,1.5"], "--sparsities"),
        (["--ratios", "erk,magic"], "--ratios"),
        (["--mlp-widths", "", "--conv-widths", ""], "--mlp-widths"),
        (["--mlp-depths", "1.5"], "--mlp-depths"),
        (["--batch-size", "99999"], "--batch-size"),
    ],
)
def test_bad_flags_name_the_flag(argv, flag, flag_error):
    assert flag in flag_error(["random-pruning", *argv])
