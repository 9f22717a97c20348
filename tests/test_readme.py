"""The README's Python example runs and prints what the README says it prints."""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def run_block(index):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) > index, "README lost a python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[index], str(README), "exec"), {"__name__": "readme"})
    return out.getvalue()


def test_readme_example_runs():
    text = run_block(0)
    assert "Dense_0/kernel" in text and "total" in text
    assert "0.513 of the weights remain" in text
    assert "0.900\n" in text


def test_readme_whole_loop_example_runs():
    text = run_block(1)
    assert "(3, 5, 3) (3, 5, 3, 5)" in text
    assert "[1.     0.5    0.25   0.125  0.0625]" in text


def test_readme_beyond_imp_example_runs():
    text = run_block(2)
    assert text.startswith("0.900\n0.800\n{'Dense_0': 32, 'Dense_1': 32}\nTrue\nTrue\n")
    assert "dense    -               Dense_2/kernel      320" in text
    assert text.rstrip().endswith("True")
