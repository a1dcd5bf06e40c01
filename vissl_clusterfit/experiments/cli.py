"""The one command-line grammar of the experiment drivers: ``<prefix>.<key>=<value>``
settings (read into the driver's settings dataclass) beside ``config.<KEY>=<value>``
overrides that go to every VISSL stage.

Hydra's own override grammar would also parse these, but the drivers' settings are not a
Hydra config (they choose which configs to compose), so a small parser typed by the
dataclass's annotations is enough and gives errors that name the setting.
"""

import dataclasses
import sys
import typing
from typing import Any, Dict, List, Optional, Tuple, Type

from vissl_clusterfit.launch.launcher import exit_if_help


def split_argv(argv: List[str], prefix: str) -> Tuple[List[str], List[str]]:
    """``argv`` -> (``<prefix>.*`` settings, ``config.*`` / ``+config.*`` overrides);
    anything else is a user error."""
    ours = [a for a in argv if a.startswith(f"{prefix}.")]
    rest = [a for a in argv if not a.startswith(f"{prefix}.")]
    bad = [a for a in rest if not a.startswith(("config.", "+config."))]
    if bad:
        raise ValueError(
            f"arguments {bad}: use {prefix}.<key>=<value> or config.<KEY>=<value>"
        )
    return ours, rest


def _base_type(annotation: Any) -> Any:
    """``Optional[int]`` -> ``int``; other annotations unchanged."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    return args[0] if typing.get_origin(annotation) is typing.Union else annotation


BOOLEANS = {
    "1": True,
    "true": True,
    "yes": True,
    "0": False,
    "false": False,
    "no": False,
}


def _typed(key: str, value: str, kind: Any) -> Any:
    if kind is bool:
        if value.lower() not in BOOLEANS:
            raise ValueError(
                f"{key}={value}: expected a boolean, one of "
                f"{', '.join(BOOLEANS)} (any case)"
            )
        return BOOLEANS[value.lower()]
    if kind is int:
        try:
            return int(value)
        except ValueError:
            raise ValueError(f"{key}={value}: expected an integer") from None
    return value


def parse_settings(cls: Type[Any], prefix: str, args: List[str]) -> Any:
    """``cls(**values)`` from ``<prefix>.<key>=<value>`` arguments, each value typed by
    the field's annotation (bool: 1 / true / yes or 0 / false / no; int; anything
    else: the text)."""
    fields = {f.name: _base_type(f.type) for f in dataclasses.fields(cls)}
    values: Dict[str, Any] = {}
    for arg in args:
        key, _, value = arg.partition("=")
        name = key[len(prefix) + 1 :]
        if name not in fields:
            raise ValueError(
                f"unknown setting '{key}': valid are "
                + ", ".join(f"{prefix}.{n}" for n in fields)
            )
        values[name] = _typed(key, value, fields[name])
    return cls(**values)


def console_argv(
    argv: Optional[List[str]], usage: str, cls: Type[Any], prefix: str
) -> List[str]:
    """The arguments of a driver's console script (``sys.argv[1:]`` unless given). On
    -h / --help: ``usage`` and the settings' names, then exit."""
    argv = sys.argv[1:] if argv is None else argv
    names = "".join(f"  {prefix}.{f.name}\n" for f in dataclasses.fields(cls))
    exit_if_help(argv, usage + names)
    return argv
