"""SLURM launch (vissl_clusterfit/launch/slurm.py, launcher.main with SLURM.USE_SLURM): the job
submitit would run, built and called without submitting anything."""

import pickle

import pytest
import submitit

import vissl_clusterfit  # noqa: F401
from vissl_clusterfit.config import compose_config
from vissl_clusterfit.hooks import hook_generator
from vissl_clusterfit.launch import launcher
from vissl_clusterfit.launch.slurm import VcfSlurmJob


class FakeExecutor:
    """submitit.AutoExecutor that records what would be submitted."""

    submitted = []

    def __init__(self, folder):
        self.folder = folder
        self.params = {}

    def update_parameters(self, **params):
        self.params.update(params)

    def submit(self, fn, *args):
        FakeExecutor.submitted.append((self, fn, args))
        return type("Job", (), {"job_id": "4242"})()


class FakeEnvironment:
    global_rank = 1
    hostnames = ["node-a", "node-b"]


@pytest.fixture
def fake_slurm(monkeypatch):
    import vissl.utils.distributed_launcher as dl

    FakeExecutor.submitted = []
    monkeypatch.setattr(submitit, "AutoExecutor", FakeExecutor)
    monkeypatch.setattr(submitit, "JobEnvironment", FakeEnvironment)
    launched = []
    monkeypatch.setattr(dl, "launch_distributed", lambda **kw: launched.append(kw))
    return launched


def slurm_config(tmp_path, *extra):
    npre = tmp_path / "npre.torch"  # read only when the cluster step runs
    npre.write_bytes(b"")
    args, cfg = compose_config(
        [
            f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
            "config=vissl_clusterfit/clusterfit/ncf_rotnet_fmnist_gpu",
            "config.SLURM.USE_SLURM=true",
            "config.SLURM.PARTITION=learnfair",
            f"config.SLURM.LOG_FOLDER={tmp_path}/slurm",
            f"config.CHECKPOINT.DIR={tmp_path}/ckpt",
            "config.DISTRIBUTED.NUM_NODES=2",
            "config.DISTRIBUTED.NUM_PROC_PER_NODE=8",
            *extra,
        ],
        dump_config=False,
    )
    return args, cfg


def test_vissl_slurm_job_uses_vissl_default_hooks(tmp_path, fake_slurm):
    """Upstream: the multi-node path never adds the plugin's hooks."""
    from vissl.hooks import default_hook_generator
    from vissl.utils.distributed_launcher import launch_distributed_on_slurm

    _, cfg = slurm_config(tmp_path)
    launch_distributed_on_slurm(cfg, engine_name="train")
    _, job, _ = FakeExecutor.submitted[-1]
    job()
    assert fake_slurm[-1]["hook_generator"] is default_hook_generator


@pytest.mark.parametrize("engine", ["train", "vcf_cluster"])
def test_main_on_slurm_submits_a_job_with_our_hooks(tmp_path, fake_slurm, engine):
    args, cfg = slurm_config(tmp_path, f"engine_name={engine}")
    launcher.main(args, cfg)
    executor, job, job_args = FakeExecutor.submitted[-1]
    assert isinstance(job, VcfSlurmJob) and job_args == ()
    assert executor.folder == f"{tmp_path}/slurm"
    params = executor.params
    assert (params["nodes"], params["tasks_per_node"], params["gpus_per_node"]) == (
        2,
        1,
        8,
    ), params
    assert params["slurm_partition"] == "learnfair"
    # submitit pickles the job and runs it once per node
    job = pickle.loads(pickle.dumps(job))
    job()
    call = fake_slurm[-1]
    assert call["hook_generator"] is hook_generator
    assert (call["engine_name"], call["node_id"]) == (engine, 1)
    assert call["cfg"].DISTRIBUTED.RUN_ID == "node-a:40050"
    assert call["cfg"].DISTRIBUTED.INIT_METHOD == "tcp"
    # the N_cf config's hooks include the ClusterFit hook on every node
    names = [type(h).__name__ for h in call["hook_generator"](call["cfg"])]
    assert "ClusterFitHook" in names, names
    # preemption / time-out requeues the same job
    requeued = job.checkpoint()
    assert isinstance(requeued.function, VcfSlurmJob)
    assert requeued.function.engine_name == engine


def test_slurm_refuses_unsupported_engines_and_missing_partition(tmp_path, fake_slurm):
    args, cfg = slurm_config(tmp_path, "engine_name=extract_cluster")
    with pytest.raises(ValueError, match="engine_name=extract_cluster"):
        launcher.main(args, cfg)
    args, cfg = slurm_config(tmp_path, "config.SLURM.PARTITION=")
    with pytest.raises(ValueError, match="SLURM.PARTITION"):
        launcher.main(args, cfg)
    assert FakeExecutor.submitted == []


def test_cpu_slurm_job_requests_no_gpus(tmp_path, fake_slurm):
    args, cfg = slurm_config(tmp_path, "config.MACHINE.DEVICE=cpu")
    launcher.main(args, cfg)
    assert "gpus_per_node" not in FakeExecutor.submitted[-1][0].params
