"""The timing lines the plugin logs, in one place with the parser that reads them back
(benchmarks/gpu_check.py, benchmarks/phase_startup.py): a format string is both how a
line is written and, turned into a regular expression, how it is read."""

import re
from typing import Any, Dict, List, Union


# hooks/phase_timer_hook.py: one per phase
PHASE_LINE = (
    "[vcf] phase {phase} ({kind}): first batch {first_batch:.2f} s after the phase "
    "started (advance {advance:.2f} s), first step done at {first_step:.2f} s; "
    "{steps} steps, {images} images, {rate:.0f} img/s after the first step"
)
# hooks/phase_timer_hook.py with compat/phase_iterators.py: where a phase's advance went
PHASE_START_LINE = (
    "[vcf] phase {phase} start: advance {advance:.2f} s = {before:.2f} s before the "
    "data iterator + {release:.2f} s old iterator + {gc:.2f} s gc.collect + "
    "{create:.2f} s new iterator (workers {workers}) + {after:.2f} s after it"
)
# cluster_step/extraction.py: one per rank and extraction
EXTRACTION_LINE = (
    "[vcf] rank {rank} extracted {n} x {dim} features in {total:.1f}s (first batch "
    "after {first:.2f}s, then {rate:.0f} img/s)"
)
_FIELD = re.compile(r"\{(\w+)(?::[^}]*)?\}")


def _regex(fmt: str) -> "re.Pattern[str]":
    parts, pos = [], 0
    for m in _FIELD.finditer(fmt):
        parts += [re.escape(fmt[pos : m.start()]), rf"(?P<{m.group(1)}>[-\w.]+)"]
        pos = m.end()
    return re.compile("".join(parts) + re.escape(fmt[pos:]))


def _value(text: str) -> Union[int, float, str]:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_lines(fmt: str, text: str) -> List[Dict[str, Any]]:
    """The fields of every line of ``text`` written with ``fmt``, in order (numbers
    as int or float)."""
    return [
        {k: _value(v) for k, v in m.groupdict().items()}
        for m in _regex(fmt).finditer(text)
    ]
