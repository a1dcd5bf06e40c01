"""The whole ClusterFit method in one command (Yan et al. 2020, Sec. 3.1 and 4.2):

    N_pre pre-training (or a given checkpoint) -> clustering + N_cf training (one VISSL
    run with the vcf hook) -> layer-wise linear evaluation of N_pre, N_cf (and N_pre 2x)
    -> report.json, report.md and plots in the output folder.

Each stage is one run of tools/run_distributed_engines.py in a subprocess (a VISSL run
owns its process group and global state), logged to ``<stage>/stdout.log``, and skipped
when its outputs already exist, so a killed pipeline resumes where it stopped.

Settings are ``pipeline.<key>=<value>`` arguments (see ``PipelineSettings``); any
``config.X=Y`` argument is passed to every VISSL stage.
"""

import dataclasses
import glob
import json
import logging
import os
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import yaml

from vissl_clusterfit.data.cluster_labels import clusterfit_output_dir, read_meta


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class PipelineSettings:
    output_dir: str = "./runs/clusterfit_demo"
    pretexts: str = "rotnet"  # comma list of rotnet, jigsaw
    scale: str = "cpu"  # cpu | gpu: which config variants
    npre_checkpoint: str = ""  # skip N_pre training (one pretext only)
    num_clusters: int = 50  # K
    data_limit: int = 8000  # D_cf / pre-training images (-1 = all 60k)
    epochs: int = 8  # N_pre and N_cf epochs (the paper keeps them equal)
    with_2x: bool = False  # also train and evaluate N_pre 2x (2 * epochs)
    with_random: bool = False  # also evaluate a randomly initialised network
    eval_train_limit: int = 8000  # linear-probe training images (-1 = all)
    eval_test_limit: int = -1  # linear-probe test images (-1 = all 10k)
    eval_epochs: int = 4
    eval_digits: bool = False  # also probe on scikit-learn digits (transfer)
    num_proc: int = 1  # processes per node for every stage
    seed: int = 0

    @classmethod
    def from_args(cls, args: List[str]) -> "PipelineSettings":
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: Dict[str, Any] = {}
        for arg in args:
            key, _, value = arg.partition("=")
            name = key[len("pipeline.") :]
            if name not in fields:
                raise ValueError(
                    f"unknown pipeline setting '{key}': valid are "
                    + ", ".join(f"pipeline.{n}" for n in fields)
                )
            ftype = fields[name].type
            if ftype in (bool, "bool"):
                values[name] = value.lower() in ("1", "true", "yes")
            elif ftype in (int, "int"):
                values[name] = int(value)
            else:
                values[name] = value
        return cls(**values)


def final_checkpoint(folder: str) -> Optional[str]:
    found = sorted(
        glob.glob(os.path.join(folder, "model_final_checkpoint_phase*.torch")),
        key=lambda p: int(p.rsplit("phase", 1)[1].split(".")[0]),
    )
    return found[-1] if found else None


class Pipeline:
    def __init__(self, settings: PipelineSettings, passthrough: List[str]) -> None:
        self.s = settings
        self.passthrough = passthrough
        self.out = os.path.abspath(settings.output_dir)
        self.timings: Dict[str, float] = {}
        os.makedirs(self.out, exist_ok=True)

    # -- running one VISSL stage ------------------------------------------------------
    def _common(self) -> List[str]:
        return [
            f"config.DISTRIBUTED.NUM_PROC_PER_NODE={self.s.num_proc}",
            f"config.SEED_VALUE={self.s.seed}",
        ]

    def run_stage(self, name: str, overrides: List[str], engine: str = "train") -> str:
        folder = os.path.join(self.out, name)
        os.makedirs(folder, exist_ok=True)
        cmd = [
            sys.executable,
            os.path.join(ROOT, "tools", "run_distributed_engines.py"),
            f"engine_name={engine}",
            *overrides,
            *self._common(),
            f"config.CHECKPOINT.DIR={folder}",
            *self.passthrough,
        ]
        log = os.path.join(folder, "stdout.log")
        print(f"[pipeline] {name}: running (log: {log})", flush=True)
        t0 = time.time()
        env = dict(os.environ)
        env.setdefault("PYTHONWARNINGS", "ignore")
        env.setdefault(
            "OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.s.num_proc))
        )
        with open(log, "a") as f:
            f.write("$ " + " ".join(cmd) + "\n")
            f.flush()
            rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        self.timings[name] = round(time.time() - t0, 1)
        if rc != 0:
            tail = open(log).read().splitlines()[-15:]
            raise RuntimeError(
                f"stage {name} failed (exit {rc}); last lines of {log}:\n"
                + "\n".join(tail)
            )
        print(f"[pipeline] {name}: done in {self.timings[name]:.0f}s", flush=True)
        return folder

    def train(self, name: str, config: str, overrides: List[str]) -> str:
        folder = os.path.join(self.out, name)
        ckpt = final_checkpoint(folder)
        if ckpt:
            print(f"[pipeline] {name}: reusing {ckpt}", flush=True)
            return ckpt
        self.run_stage(name, [f"config={config}", *overrides])
        ckpt = final_checkpoint(folder)
        if not ckpt:
            raise RuntimeError(
                f"stage {name} finished without a final checkpoint in {folder}"
            )
        return ckpt

    def linear_eval(
        self,
        name: str,
        checkpoint: str,
        target: str = "fmnist",
        extra: Optional[List[str]] = None,
    ) -> Dict[str, float]:
        """VISSL's layer-wise linear probes of ``checkpoint``; ``extra`` overrides make the
        probed trunk match the checkpoint's (e.g. a Sobel stem)."""
        folder = os.path.join(self.out, name)
        done = os.path.join(folder, "linear_eval.json")
        if os.path.isfile(done):
            with open(done) as f:
                result = json.load(f)
            if result.get("checkpoint") == checkpoint:
                print(f"[pipeline] {name}: reusing {done}", flush=True)
                return result["top1"]
        overrides = [
            f"config=vissl_clusterfit/benchmark/linear_{target}_{self.s.scale}",
            f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={checkpoint}",
            f"config.OPTIMIZER.num_epochs={self.s.eval_epochs}",
            # the report reads the final test pass; VISSL also always tests after epoch 0
            f"config.TEST_EVERY_NUM_EPOCH={self.s.eval_epochs}",
        ]
        if target == "fmnist":
            overrides += [
                f"config.DATA.TRAIN.DATA_LIMIT={self.s.eval_train_limit}",
                f"config.DATA.TEST.DATA_LIMIT={self.s.eval_test_limit}",
            ]
        self.run_stage(name, overrides + list(extra or []))
        top1 = read_final_test_accuracy(os.path.join(folder, "metrics.json"))
        with open(done, "w") as f:
            json.dump({"checkpoint": checkpoint, "top1": top1}, f, indent=2)
        return top1

    # -- the method -------------------------------------------------------------------
    def run(self) -> Dict[str, Any]:
        s = self.s
        t_start = time.time()
        sizes = [
            f"config.DATA.TRAIN.DATA_LIMIT={s.data_limit}",
            f"config.OPTIMIZER.num_epochs={s.epochs}",
        ]
        pretexts = [p.strip() for p in s.pretexts.split(",") if p.strip()]
        for p in pretexts:
            if p not in ("rotnet", "jigsaw"):
                raise ValueError(
                    f"pipeline.pretexts: '{p}' is not one of rotnet, jigsaw"
                )
        if s.npre_checkpoint and len(pretexts) != 1:
            raise ValueError(
                "pipeline.npre_checkpoint needs exactly one pipeline.pretexts entry"
            )
        models: Dict[str, str] = {}
        clusters: Dict[str, Any] = {}
        for p in pretexts:
            npre = s.npre_checkpoint or self.train(
                f"npre_{p}", f"vissl_clusterfit/pretrain/{p}_fmnist_{s.scale}", sizes
            )
            models[f"N_pre {p}"] = npre
            if s.with_2x:
                models[f"N_pre 2x {p}"] = self.train(
                    f"npre2x_{p}",
                    f"vissl_clusterfit/pretrain/{p}_fmnist_{s.scale}",
                    [sizes[0], f"config.OPTIMIZER.num_epochs={2 * s.epochs}"],
                )
            ncf_name = f"ncf_{p}_k{s.num_clusters}"
            models[f"N_cf {p} K={s.num_clusters}"] = self.train(
                ncf_name,
                f"vissl_clusterfit/clusterfit/ncf_{p}_fmnist_{s.scale}",
                sizes
                + [
                    f"config.VCF.CLUSTERFIT.NPRE_CHECKPOINT={npre}",
                    f"config.VCF.CLUSTERFIT.NUM_CLUSTERS={s.num_clusters}",
                    f"config.VCF.CLUSTERFIT.SEED={s.seed}",
                ],
            )
            clusters[p] = read_meta(
                clusterfit_output_dir("", os.path.join(self.out, ncf_name)),
                f"clusterfit_{p}",
            )
        if s.with_random:
            models["random init"] = self.random_init_checkpoint()
        results: Dict[str, Dict[str, Dict[str, float]]] = {"fmnist": {}}
        for label, ckpt in models.items():
            slug = label.replace(" ", "_").replace("=", "")
            results["fmnist"][label] = self.linear_eval(f"linear_{slug}", ckpt)
            if s.eval_digits:
                results.setdefault("digits", {})[label] = self.linear_eval(
                    f"linear_digits_{slug}", ckpt, target="digits"
                )
        report = {
            "settings": dataclasses.asdict(s),
            "passthrough": self.passthrough,
            "checkpoints": models,
            "linear_top1": results,
            "clusters": {
                p: {"metrics": m["metrics"], "files": m["files"], "time_s": m["time_s"]}
                for p, m in clusters.items()
            },
            "stage_time_s": self.timings,
            "total_time_s": round(time.time() - t_start, 1),
        }
        from vissl_clusterfit.report import write_report

        write_report(self.out, report)
        return report

    def random_init_checkpoint(
        self, extra_overrides: Optional[List[str]] = None, name: str = "random_init"
    ) -> str:
        """A 0-epoch 'training' is not possible in VISSL; save an untrained trunk in the
        layout VISSL's weight loading expects instead, with a train_config.yaml beside it
        (as VISSL writes one) so that tools reading the model config from there build the
        same architecture. ``extra_overrides`` change the architecture (e.g. a Sobel stem)
        to match the models it is compared with; give each variant its own ``name``."""
        path = os.path.join(self.out, name, "random_init.torch")
        if os.path.isfile(path):
            return path
        import torch
        from vissl.models.trunks import get_model_trunk

        from vissl_clusterfit.launcher import compose_config

        _, cfg = compose_config(
            [
                f"config=vissl_clusterfit/pretrain/rotnet_fmnist_{self.s.scale}",
                "config.CHECKPOINT.DIR=/tmp",
                *(extra_overrides or []),
            ],
            dump_config=False,
        )
        torch.manual_seed(self.s.seed)
        trunk = get_model_trunk(cfg.MODEL.TRUNK.NAME)(cfg.MODEL, cfg.MODEL.TRUNK.NAME)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        state = {
            "classy_state_dict": {
                "base_model": {"model": {"trunk": trunk.state_dict(), "heads": {}}}
            }
        }
        torch.save(state, path)
        model = cfg.MODEL.to_dict()
        model.get("FSDP_CONFIG", {}).pop(
            "compute_dtype", None
        )  # a torch.dtype, not YAML
        with open(os.path.join(os.path.dirname(path), "train_config.yaml"), "w") as f:
            yaml.safe_dump({"MODEL": model}, f)
        return path


def read_final_test_accuracy(metrics_path: str) -> Dict[str, float]:
    """Top-1 per layer of the last test evaluation in VISSL's metrics.json."""
    last = None
    with open(metrics_path) as f:
        for line in f:
            entry = json.loads(line)
            if "test_accuracy_list_meter" in entry:
                last = entry["test_accuracy_list_meter"]["top_1"]
    if last is None:
        raise RuntimeError(f"{metrics_path} has no test accuracy")
    return {k: round(float(v), 2) for k, v in last.items()}


def main(argv: List[str]) -> Dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    ours = [a for a in argv if a.startswith("pipeline.")]
    rest = [a for a in argv if not a.startswith("pipeline.")]
    bad = [a for a in rest if not a.startswith(("config.", "+config."))]
    if bad:
        raise ValueError(
            f"arguments {bad}: use pipeline.<key>=<value> or config.<KEY>=<value>"
        )
    return Pipeline(PipelineSettings.from_args(ours), rest).run()
