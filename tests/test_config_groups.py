"""The plugin's keys on VISSL's own configs through one config group on the command line
(``+vissl_clusterfit_defaults=<option>``), composed in a fresh subprocess by VISSL's own
``compose_hydra_configuration``, as a user's command line would be."""

import json
import subprocess
import sys

from tests.conftest import ROOT


SCRIPT = r"""
import json, sys
from omegaconf import OmegaConf
import vissl_clusterfit  # noqa: F401  (the hydra search path plugin imports it too)
from vissl.utils.hydra_config import compose_hydra_configuration

def compose(overrides):
    try:
        cfg = compose_hydra_configuration(overrides)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {e}"}
    c = OmegaConf.to_container(cfg.config, resolve=True)
    v = c.get("VCF", {}).get("CLUSTERFIT", {})
    return {
        "device": c["MACHINE"]["DEVICE"],
        "sync_bn": c["MODEL"]["SYNC_BN_CONFIG"]["CONVERT_BN_TO_SYNC_BN"],
        "test_model": c["TEST_MODEL"],
        "enabled": v.get("ENABLED"),
        "k": v.get("NUM_CLUSTERS"),
        "transform0": (v.get("TRANSFORMS") or [{}])[0],
        "label_sources": c["DATA"]["TRAIN"]["LABEL_SOURCES"],
        "label_paths": c["DATA"]["TRAIN"]["LABEL_PATHS"],
        "head": c["MODEL"]["HEAD"]["PARAMS"],
        "epochs": c["OPTIMIZER"]["num_epochs"],
    }

for line in sys.stdin:
    print(json.dumps(compose(json.loads(line))), flush=True)
"""

CASES = {
    "no_group": [
        "config=pretrain/supervised/supervised_8gpu_resnet",
        "config.VCF.CLUSTERFIT.ENABLED=true",
    ],
    "plugin": [
        "config=pretrain/rotnet/rotnet_8gpu_resnet",
        "+vissl_clusterfit_defaults=plugin",
        "config.VCF.CLUSTERFIT.ENABLED=true",
    ],
    "ncf": [
        "config=pretrain/supervised/supervised_8gpu_resnet",
        "+vissl_clusterfit_defaults=ncf",
        "config.VCF.CLUSTERFIT.NUM_CLUSTERS=77",
    ],
    "ncf_cpu": [
        "config=pretrain/supervised/supervised_8gpu_resnet",
        "+vissl_clusterfit_defaults=[ncf,cpu]",
    ],
    # the pipeline adds [plugin,cpu] to our N_cf config, which includes plugin itself:
    # the config's own values must survive
    "ours_plus_plugin": [
        "config=vissl_clusterfit/clusterfit/ncf_rotnet_resnet50_in1k_gpu",
        "+vissl_clusterfit_defaults=[plugin,cpu]",
    ],
}


USER_YAML = """# @package _global_
defaults:
  - /config/pretrain/supervised/supervised_8gpu_resnet
  - /vissl_clusterfit_defaults/ncf
  - _self_
config:
  VCF:
    CLUSTERFIT:
      NUM_CLUSTERS: 1234
"""


def test_config_group_on_vissl_configs(tmp_path):
    # docs/imagenet.md: a user's own YAML with the option in its defaults list
    (tmp_path / "config" / "mine").mkdir(parents=True)
    (tmp_path / "config" / "mine" / "ncf_supervised.yaml").write_text(USER_YAML)
    cases = dict(
        CASES,
        user_yaml=[
            f"hydra.searchpath=[file://{tmp_path}]",
            "config=mine/ncf_supervised",
        ],
    )
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        input="".join(json.dumps(v) + "\n" for v in cases.values()),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PATH": ""},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == len(cases), proc.stdout + proc.stderr[-3000:]
    out = dict(zip(cases, map(json.loads, lines)))

    # why the group exists: VISSL's defaults.yaml does not know the plugin's keys
    assert "VCF" in out["no_group"].get("error", ""), out["no_group"]

    assert out["plugin"]["enabled"] is True and out["plugin"]["k"] == 100
    assert out["plugin"]["head"] == [["mlp", {"dims": [2048, 4]}]]  # VISSL's, untouched

    ncf = out["ncf"]
    assert ncf["enabled"] is True and ncf["test_model"] is False, ncf
    assert ncf["label_sources"] == ["vcf_cluster_labels"], ncf
    assert ncf["label_paths"] == ["auto"], ncf
    assert ncf["head"] == [["mlp", {"dims": [2048, 77]}]], ncf
    assert ncf["transform0"] == {"name": "Resize", "size": 256}, ncf
    assert ncf["epochs"] == 105 and ncf["device"] == "gpu", ncf  # VISSL's schedule

    assert out["ncf_cpu"]["device"] == "cpu" and out["ncf_cpu"]["sync_bn"] is False
    assert out["ncf_cpu"]["k"] == 16000, out["ncf_cpu"]

    ours = out["ours_plus_plugin"]
    assert ours["k"] == 16000 and ours["enabled"] is True, ours
    assert ours["transform0"]["size"] == 256 and ours["device"] == "cpu", ours

    user = out["user_yaml"]
    assert user["k"] == 1234 and user["head"] == [["mlp", {"dims": [2048, 1234]}]], user
    assert user["label_sources"] == ["vcf_cluster_labels"] and user["epochs"] == 105
