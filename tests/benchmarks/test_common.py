"""benchmarks.common: the recorded command and the results header."""

import shlex
import sys
import types

from benchmarks import common


def test_command_line_of_a_module_run(monkeypatch) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name="benchmarks.cluster_step_speed")
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(
        sys,
        "argv",
        ["/repo/benchmarks/cluster_step_speed.py", "--quick", "--name", "a b"],
    )
    assert shlex.split(common.command_line()) == [
        sys.executable,
        "-m",
        "benchmarks.cluster_step_speed",
        "--quick",
        "--name",
        "a b",
    ]


def test_command_line_of_a_script_run(monkeypatch) -> None:
    main = types.ModuleType("__main__")
    main.__spec__ = None
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", ["tools/x.py", "--k", "5"])
    assert shlex.split(common.command_line()) == [
        sys.executable,
        "tools/x.py",
        "--k",
        "5",
    ]


def test_header_lines_name_command_commit_and_machine() -> None:
    machine = {
        "command": "python -m benchmarks.probes ckpt",
        "git_commit": "abc123",
        "date": "2026-11-24",
        "cpu": "AMD EPYC",
        "cores": 2,
    }
    lines = common.header_lines(machine, ["wall time: 3 s"])
    assert lines[0] == "- command: `python -m benchmarks.probes ckpt`"
    assert lines[1] == "- commit: `abc123`"
    assert lines[3].startswith("- machine: AMD EPYC, 2 cores")
    assert lines[-1] == "- wall time: 3 s"
