"""MkDocs hook: Sphinx roles in docstrings (``:func:`masked```) read as plain code.

The docstrings are written for ``help()`` and doctest, with Sphinx-style roles; on the
site a role's name is noise, so ``:func:<code>x</code>`` becomes ``<code>x</code>``
(``~a.b.c`` shows as ``c``, as Sphinx does).
"""

import re

_ROLE = re.compile(r":(?:func|class|mod|meth|attr|data|obj|exc):<code>(~?)([^<]*)</code>")


def _code(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs) -> str:
    del kwargs
    return _ROLE.sub(_code, html)
