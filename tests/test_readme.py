"""The README's Python example runs and prints what the README says it prints.

The README keeps one example, the library in one page (also shown on the docs' getting
started page). The examples that used to follow it moved to the documentation and run in
``tests/test_docs.py``.
"""

import contextlib
import io
import pathlib
import re

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def run_block(index, path=README):
    blocks = re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)
    assert len(blocks) > index, f"{path.name} lost a python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[index], str(path), "exec"), {"__name__": "readme"})
    return out.getvalue()


def test_readme_example_runs():
    text = run_block(0)
    assert "Dense_0/kernel" in text and "total" in text
    assert "0.513 of the weights remain" in text
    assert "0.900\n" in text


def test_readme_has_one_python_example():
    # the wheel check in .ci/run runs block 0 with the core dependencies only
    assert len(re.findall(r"```python\n", README.read_text())) == 1
