"""The one prefix.key=value parser of the experiment drivers."""

import dataclasses
import warnings
from typing import Optional

import pytest

from vissl_clusterfit.experiments.cli import console_argv, parse_settings, split_argv


@dataclasses.dataclass
class Settings:
    name: str = "a"
    count: Optional[int] = None
    flag: bool = False
    seeds: Optional[str] = None


def test_values_are_typed_by_the_annotation():
    s = parse_settings(
        Settings, "x", ["x.name=007", "x.count=3", "x.flag=yes", "x.seeds=0,1"]
    )
    assert (s.name, s.count, s.flag, s.seeds) == ("007", 3, True, "0,1"), s
    assert parse_settings(Settings, "x", ["x.flag=false"]).flag is False
    assert parse_settings(Settings, "x", ["x.flag=No"]).flag is False
    assert parse_settings(Settings, "x", ["x.flag=TRUE"]).flag is True


@pytest.mark.parametrize(
    "arg,message",
    [("x.nope=1", "unknown setting 'x.nope': valid are x.name, x.count"),
     ("x.count=many", "x.count=many: expected an integer"),
     ("x.flag=yes please",
      "x.flag=yes please: expected a boolean, one of 1, true, yes, 0, false, no")],
)  # fmt: skip
def test_bad_settings_name_the_setting(arg, message):
    with pytest.raises(ValueError, match=message):
        parse_settings(Settings, "x", [arg])


def test_split_argv_keeps_config_overrides_and_refuses_the_rest():
    ours, rest = split_argv(["x.a=1", "config.B=2", "+config.C=3"], "x")
    assert ours == ["x.a=1"] and rest == ["config.B=2", "+config.C=3"]
    with pytest.raises(ValueError, match=r"\['y.a=1'\]: use x.<key>=<value>"):
        split_argv(["y.a=1"], "x")


def test_console_argv_leaves_the_warning_filters_alone():
    with warnings.catch_warnings():
        before = list(warnings.filters)
        assert console_argv(["x.flag=1"], "usage", Settings, "x") == ["x.flag=1"]
        assert warnings.filters == before, warnings.filters[:3]
