"""The report's table cells: numbers that remember the summary file and key, or the computation, they came from
(``report.json`` lists them, so every number in a report can be checked)."""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import NamedTuple


def fmt(v, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return spec.format(v)


class Derived(NamedTuple):
    """A number the report computed (an interval, a mean over seeds): its text, how, and the files it read."""

    text: str
    how: str
    inputs: list


class Table:
    """Rows of cells that remember where each number came from."""

    def __init__(self, headers: list[str]):
        self.headers, self.rows, self.sources = headers, [], []

    def add(self, cells: list):
        """Each cell is a plain string, a ``Derived`` number, or (summary folder, key, format, value)."""
        row = []
        for c in cells:
            if isinstance(c, Derived):
                row.append(c.text)
                if c.text != "–":
                    self.sources.append({"text": c.text, "computed": c.how, "from": c.inputs})
            elif isinstance(c, tuple):
                folder, key, spec, value = c
                text = fmt(value, spec)
                row.append(text)
                if text != "–":
                    self.sources.append({"file": str(Path(folder).name) + "/summary.json",
                                         "key": list(key) if isinstance(key, (list, tuple)) else [key],
                                         "format": spec, "text": text})
            else:
                row.append(str(c))
        self.rows.append(row)

    def md(self) -> str:
        lines = ["| " + " | ".join(self.headers) + " |", "|" + "---|" * len(self.headers)]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in self.rows])

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell(folder: Path, summary: dict, key: str, spec: str, *, sub: tuple[str, ...] = ()):
    v = summary
    for k in sub:
        v = v.get(k, {})
    return (folder, sub + (key,), spec, v.get(key))


def iv(iv, spec: str = "{:+.3f}") -> str:
    return ("–" if not (math.isfinite(iv.low) and math.isfinite(iv.high))
            else f"{fmt(iv.low, spec)} .. {fmt(iv.high, spec)}")
