"""The plugin's config defaults and config composition.

The defaults live in one YAML file, ``configs/vissl_clusterfit_defaults/plugin.yaml``
(each key commented there). Shipped configs include it through their hydra defaults
list; ``add_plugin_defaults`` fills the same keys into any other VISSL config (e.g. a
user's own YAML) without overriding what the user set. It runs at the two entry points
a config reaches the plugin through: ``compose_config`` (our launcher) and
``hooks.hook_generator`` (VISSL's own launcher).
"""

import os
from typing import Any, Dict, List, Tuple

import yaml


def _register_resolvers() -> None:
    """``${vcf_mul:a,b}`` = a * b in our YAML, so that DeeperCluster's head and loss
    derive their 4 x m super-classes from ``VCF.DEEPCLUSTER.DEEPER.NUM_GROUPS``;
    ``${vcf_linear_lr:...}``: a learning rate scaled by the global batch with the
    warm-up kept on one node, which VISSL's auto_lr_scaling drops (optim.lr_scaling)."""
    from omegaconf import OmegaConf

    from vissl_clusterfit.optim.lr_scaling import RESOLVER, resolve_linear_lr

    if not OmegaConf.has_resolver("vcf_mul"):
        OmegaConf.register_new_resolver("vcf_mul", lambda a, b: int(a) * int(b))
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, resolve_linear_lr)


_register_resolvers()

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


def compose_config(overrides: List[str], dump_config: bool = True) -> Tuple[Any, Any]:
    """``config=...`` overrides -> (args, config) AttrDicts, as VISSL's tool does, with
    the plugin's defaults filled in."""
    from omegaconf import OmegaConf
    from vissl.utils.hydra_config import convert_to_attrdict

    from vissl_clusterfit.compat import patches as compat
    from vissl_clusterfit.optim.schedule_length import fit_schedules

    cfg = compat.compose_hydra_configuration(overrides)
    # our configs tie values together with ${config...} interpolations (e.g. the N_cf
    # head's output dim follows VCF.CLUSTERFIT.NUM_CLUSTERS); VISSL does not resolve them
    OmegaConf.resolve(cfg)
    # a shorter num_epochs than the config's lr steps: scaled (or refused), before the
    # config is dumped
    fit_schedules(
        cfg.config,
        overrides,
        lambda o: compat.compose_hydra_configuration(o).config,
    )
    args, config = convert_to_attrdict(cfg, dump_config=dump_config)
    add_plugin_defaults(config)
    return args, config
