"""The python example of ``docs/oneshot.md`` (written to move into the README as it is)
runs and prints what the page says it prints."""

import contextlib
import io
import pathlib
import re

PAGE = pathlib.Path(__file__).resolve().parent.parent / "docs" / "oneshot.md"


def test_oneshot_page_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert blocks, "docs/oneshot.md lost its python example"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], str(PAGE), "exec"), {"__name__": "oneshot_doc"})
    assert out.getvalue() == ("0.500 ['Dense_0/kernel', 'Dense_1/kernel']\nTrue\nNMPacked\n0.50\n")
