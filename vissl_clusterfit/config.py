"""The plugin's config defaults and helpers to read them.

The defaults live in one YAML file, ``configs/vissl_clusterfit_defaults/plugin.yaml``
(each key commented there). Shipped configs include it through their hydra defaults
list; ``add_plugin_defaults`` fills the same keys into any other VISSL config (e.g. a
user's own YAML) without overriding what the user set.
"""

import os
from typing import Any, Dict

import yaml


_DEFAULTS_FILE = os.path.join(
    os.path.dirname(__file__), "configs", "vissl_clusterfit_defaults", "plugin.yaml"
)


def plugin_defaults() -> Dict[str, Any]:
    """The ``config:`` tree of plugin.yaml as plain dicts."""
    with open(_DEFAULTS_FILE) as f:
        return yaml.safe_load(f)["config"]


def _fill_missing(target: Any, defaults: Dict[str, Any]) -> None:
    for key, value in defaults.items():
        if key not in target:
            target[key] = value
        elif isinstance(value, dict) and isinstance(target[key], dict):
            _fill_missing(target[key], value)


def add_plugin_defaults(cfg: Any) -> Any:
    """Fill the plugin's keys missing from a VISSL AttrDict config (in place)."""
    from vissl.config import AttrDict

    _fill_missing(cfg, AttrDict(plugin_defaults()))
    return cfg
