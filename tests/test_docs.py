"""The documentation's examples run and print what the pages say they print.

Each page's ``python`` blocks run in order in one namespace, as a reader would paste
them. Every page with a ``python`` block is either run here or listed in ``NOT_RUN`` with
the reason.
"""

import contextlib
import io
import pathlib
import re

import jax
import jax.numpy as jnp
import pytest

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
BLOCK = re.compile(r"```python\n(.*?)```", flags=re.S)

NOT_RUN = {
    # needs jax.distributed across processes; tests/test_multihost.py runs this code
    "concepts/multi-host.md",
    # its example is run, and its output checked, by tests/test_docs_oneshot.py
    "oneshot.md",
}
RUN = {
    "index.md",
    "concepts/masks.md",
    "concepts/pruning.md",
    "concepts/masked.md",
    "concepts/imp.md",
    "concepts/structured.md",
    "concepts/sparse-training.md",
    "concepts/transfer.md",
    "concepts/export.md",
    "nnx.md",
    "equinox.md",
}


def run_page(name):
    """(printed text, namespace) of the page's python blocks run in order."""
    path = DOCS / name
    blocks = BLOCK.findall(path.read_text())
    assert blocks, f"{name} has no python example"
    namespace = {"__name__": "docs"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        for block in blocks:
            exec(compile(block, str(path), "exec"), namespace)
    return out.getvalue(), namespace


def test_every_example_page_is_run_or_excused():
    pages = {str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if BLOCK.search(p.read_text())}
    assert pages == RUN | NOT_RUN


def test_index():
    text, _ = run_page("index.md")
    assert text == "0.25 0.25\n"


def test_masks():
    text, _ = run_page("concepts/masks.md")
    assert text.startswith("True\npath ")
    assert "Dense_0/kernel  (3, 4)       9      12    25.00%" in text
    assert text.split("\ntotal")[1].splitlines()[1:] == [
        "0.25",
        "[-2.  0.  0.  0.]",
        "0.5",
        "True",
        "0.25",
        "uint8",
        "True",
    ]


def test_pruning():
    text, _ = run_page("concepts/pruning.md")
    assert "Dense_0/kernel  (784, 300)  188160  235200    20.00%" in text
    assert "Dense_2/kernel  (100, 10)      900    1000    10.00%" in text
    assert text.endswith("266200 53240 53240\n0.900\n")


def test_masked():
    text, _ = run_page("concepts/masked.md")
    assert text == "[0. 0.]\nTrue\n0.75\nuint8 (4, 2)\nbool\n(4, 16)\n"


def test_imp_whole_loop():
    text, _ = run_page("concepts/imp.md")
    assert "(3, 5, 3) (3, 5, 3, 5)" in text
    assert "[1.     0.5    0.25   0.125  0.0625]" in text


def test_structured():
    text, _ = run_page("concepts/structured.md")
    assert text == "{'Dense_0': 32, 'Dense_1': 32}\nTrue\n0.500\nTrue\n"


def test_sparse_training():
    text, _ = run_page("concepts/sparse-training.md")
    assert text == "0.900\n0.800\n"


def test_transfer():
    text, _ = run_page("concepts/transfer.md")
    assert "dense    -               Dense_2/kernel      320" in text
    assert text.endswith("True\nTrue\n[0, 1, 1, 2, 2]\n")


def test_export():
    text, _ = run_page("concepts/export.md")
    assert text == "True\nBCSR\nTrue\n"


def _pruned_are_zero(params, mask):
    return all(
        bool(jnp.all(p[~m] == 0)) for p, m in zip(jax.tree.leaves(params), jax.tree.leaves(mask))
    )


def test_nnx():
    text, ns = run_page("nnx.md")
    assert text == ("0.500\nTrue\n0.512 of the weights remain\n{'fc1': 32, 'fc2': 32}\nTrue\n")
    # after masked(adam) training with the neuron mask, pruned weights are exactly 0
    assert _pruned_are_zero(ns["params"], ns["neuron_mask"])
    assert _pruned_are_zero(ns["state"].params, ns["state"].mask)
    # the shrunk NNX model computes the masked model's outputs
    x = ns["x"]
    assert ns["small_model"](x).shape == ns["masked_out"].shape
    assert jnp.allclose(ns["small_model"](x), ns["masked_out"], atol=1e-5)
    assert ns["small"]["fc1"]["kernel"].shape == (20, 32)


def test_equinox():
    pytest.importorskip("equinox")
    text, ns = run_page("equinox.md")
    assert "layers/1/weight  (64, 64)" in text
    assert text.endswith("0.500\nTrue\n0.512 of the weights remain\n")
    assert _pruned_are_zero(ns["params"], ns["mask"])
    assert _pruned_are_zero(ns["state"].params, ns["state"].mask)
