"""Griffe extension for the API reference: one entry per name in NumPy-style parameter groups.

NumPy docstrings may document several parameters in one entry (``n_way, k_shot, q_queries : int``).
Griffe gives every name of such an entry the default value of the first name it finds in the
signature, so the reference's "Default" column would show ``'logistic'`` for ``objective``. This
extension rewrites each group into one entry per name, with the same type and description, before the
docstring is parsed; the source is not changed.
"""

from __future__ import annotations

import re
from typing import Any

from griffe import Extension

SECTION = re.compile(r"^(Parameters|Other Parameters|Attributes)\n-+\n", re.M)
GROUP = re.compile(r"^(\w+(?:, \w+)+)( :.*)?$")


def split_groups(text: str) -> str:
    """``text`` with every grouped entry of its parameter sections repeated once per name."""
    lines = text.split("\n")
    out: list[str] = []
    in_section, i = False, 0
    while i < len(lines):
        line = lines[i]
        if i + 1 < len(lines) and SECTION.match(f"{line}\n{lines[i + 1]}\n"):
            in_section = True
            out += [line, lines[i + 1]]
            i += 2
            continue
        if in_section and line and not line[0].isspace() and i + 1 < len(lines) and re.fullmatch(r"-+", lines[i + 1]):
            in_section = False  # the next section's heading
        m = GROUP.match(line) if in_section else None
        if m is None:
            out.append(line)
            i += 1
            continue
        body = []
        j = i + 1
        while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j]):
            if not lines[j] and (j + 1 >= len(lines) or not lines[j + 1].startswith((" ", "\t"))):
                break
            body.append(lines[j])
            j += 1
        for name in m.group(1).split(", "):
            out += [name + (m.group(2) or ""), *body]
        i = j
    return "\n".join(out)


class NumpyParameterGroups(Extension):
    """Split grouped NumPy parameter entries so that each name gets its own default."""

    def on_object(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and "," in docstring.value:
            docstring.value = split_groups(docstring.value)
