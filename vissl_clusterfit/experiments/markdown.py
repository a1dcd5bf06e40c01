"""The experiments' one Markdown table writer (pipeline and control-experiment reports)."""

from typing import Any, List, Sequence


def markdown_table(
    header: Sequence[Any], rows: Sequence[Sequence[Any]], align: str = ""
) -> List[str]:
    """GitHub Markdown table lines. ``align``: one letter per column, ``r`` for a
    right-aligned (numeric) column, anything else left; default all left."""
    align = align or "l" * len(header)
    if len(align) != len(header):
        raise ValueError(f"align={align!r} has {len(align)} letters for {len(header)} columns")  # fmt: skip
    rule = "|" + "".join(("---:" if a == "r" else "---") + "|" for a in align)
    lines = ["| " + " | ".join(map(str, header)) + " |", rule]
    return lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows]
