"""launcher.main on one node: VISSL's launch_distributed with our hook generator, and
the process group of an engine that ran in this process destroyed before exit."""

import pytest
import torch.distributed as dist

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.hooks import hook_generator
from vissl_clusterfit.launch import launcher


@pytest.fixture
def engine_in_this_process(monkeypatch, tmp_path):
    """launch_distributed replaced by what it does with one process: the engine runs
    here and VISSL's trainer leaves a gloo group behind."""
    import vissl.utils.distributed_launcher as dl

    calls = []

    def launch_distributed(cfg, node_id, engine_name, hook_generator):
        calls.append(dict(node_id=node_id, engine=engine_name, hooks=hook_generator))
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1
        )
        if engine_name == "failing":
            raise RuntimeError("engine failed")

    monkeypatch.setattr(dl, "launch_distributed", launch_distributed)
    yield calls
    if dist.is_initialized():
        dist.destroy_process_group()


def config(tmp_path, *extra):
    return compose_config(
        [
            "config=vissl_clusterfit/pretrain/rotnet_fmnist_cpu",
            f"config.CHECKPOINT.DIR={tmp_path}",
            *extra,
        ],
        dump_config=False,
    )


def test_main_runs_our_hooks_and_destroys_the_process_group(
    tmp_path, engine_in_this_process
):
    args, cfg = config(tmp_path, "engine_name=vcf_cluster", "node_id=0")
    launcher.main(args, cfg)
    assert engine_in_this_process == [
        dict(node_id=0, engine="vcf_cluster", hooks=hook_generator)
    ]
    assert not dist.is_initialized()


def test_main_destroys_the_process_group_when_the_engine_fails(
    tmp_path, engine_in_this_process
):
    args, cfg = config(tmp_path, "engine_name=failing")
    with pytest.raises(RuntimeError, match="engine failed"):
        launcher.main(args, cfg)
    assert not dist.is_initialized()
