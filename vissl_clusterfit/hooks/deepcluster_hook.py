"""DeepCluster (Caron 2018, KTH thesis Ch. 3-4; Caron et al. ECCV 2018) on VISSL's trainer.

Every T epochs, at the start of the epoch, the hook
1. extracts features of the network being trained (``FEATURE_LAYER``, eval mode) for
   D_cf = DATA.TRAIN, sharded over ranks like the ClusterFit hook;
2. on rank 0: PCA-whitening to 256 dims then L2 (thesis Sec. 4.2), k-means or Power
   Iteration Clustering (Sec. 2.4/3.2); empty clusters re-seeded by splitting (Sec. 4.2);
3. gives every rank the labels, installs them in the train dataset, and (optionally)
   rebuilds the train loader with a sampler drawing uniformly over clusters (Sec. 3.3);
4. re-initialises the last head and drops its optimizer state, because cluster ids
   change meaning from one clustering to the next;
5. logs cluster sizes, empty clusters, NMI with the previous round and NMI/AMI/purity
   against ground truth when the data source has labels (``deepcluster_rounds.jsonl``).

DeeperCluster mode (``DEEPER.ENABLED``; Caron et al. ICCV 2019, Sec. 4): the clustering
is a two-level k-means (m groups, k sub-clusters each) and the label of an image is its
code ``group * k + sub``; ``vcf_rotation_cluster_collator`` rotates the images and forms
the rotation x cluster targets of the hierarchical loss (Eq. 5).

Resume: the labels of the current round are part of the hook's classy state, which
VISSL saves in every checkpoint, so a resumed run trains on the same targets instead
of re-clustering from a different model.

Config params: ``config.VCF.DEEPCLUSTER`` (configs/vissl_clusterfit_defaults/plugin.yaml).
"""

import copy
import json
import logging
import os
import time
from typing import Any, Dict

import numpy as np
import torch
import torch.distributed as dist
from classy_vision.hooks.classy_hook import ClassyHook

from vissl_clusterfit import clustering
from vissl_clusterfit.hooks import feature_extraction as fx
from vissl_clusterfit.hooks.clusterfit_hook import kmeans_backend


def _dist() -> bool:
    return dist.is_available() and dist.is_initialized()


class DeepClusterHook(ClassyHook):
    on_forward = ClassyHook._noop
    on_loss_and_meter = ClassyHook._noop
    on_backward = ClassyHook._noop
    on_update = ClassyHook._noop
    on_step = ClassyHook._noop
    on_phase_end = ClassyHook._noop
    on_end = ClassyHook._noop

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg = cfg
        self.params = cfg.VCF.DEEPCLUSTER
        if self.params.ALGORITHM not in ("kmeans", "pic"):
            raise ValueError(
                f"config.VCF.DEEPCLUSTER.ALGORITHM={self.params.ALGORITHM}: use kmeans or pic"
            )
        self.distributed_kmeans = (
            kmeans_backend(self.params, "DEEPCLUSTER") == "distributed"
        )
        if self.distributed_kmeans and (
            self.params.ALGORITHM != "kmeans"
            or (self.params.get("DEEPER", {}) or {}).get("ENABLED")
        ):
            raise ValueError(
                "config.VCF.DEEPCLUSTER.KMEANS_BACKEND=distributed supports ALGORITHM=kmeans "
                "without DEEPER only; set KMEANS_BACKEND=faiss for PIC and DeeperCluster"
            )
        self.state: Dict[str, Any] = {
            "round": -1,
            "clustered_epoch": -1,
            "labels": None,
        }
        self._extraction_dataset = None

    # -- checkpointed state -----------------------------------------------------------
    def get_classy_state(self) -> Dict[str, Any]:
        return copy.copy(self.state)

    def set_classy_state(self, state: Dict[str, Any]) -> None:
        self.state = dict(state)
        self._installed_epoch = None

    def on_start(self, task: Any) -> None:
        # VISSL saves task.get_classy_state() (hooks included) in every checkpoint, but
        # its SelfSupervisionTask._set_classy_state does not hand hook states back on
        # resume: restore ours from the loaded checkpoint here.
        checkpoint = getattr(task, "checkpoint", None) or {}
        saved = (
            checkpoint.get("classy_state_dict", {}).get("hooks", {}).get(self.name())
        )
        if saved:
            self.set_classy_state(saved)
            logging.info(
                f"[vcf] DeepCluster: restored round {saved['round']} from the checkpoint"
            )

    # -- the clustering round ---------------------------------------------------------
    def on_phase_start(self, task: Any) -> None:
        if not task.train:
            return
        epoch = task.train_phase_idx
        due = epoch - epoch % int(self.params.RECLUSTER_EVERY)
        if self.state["clustered_epoch"] == due and self.state["labels"] is not None:
            if getattr(self, "_installed_epoch", None) is None:
                logging.info(
                    f"[vcf] DeepCluster: resuming with the targets of epoch {due}"
                )
            self._install(task, np.asarray(self.state["labels"]), epoch, reset=False)
            return
        labels = self._recluster(task, epoch)
        self.state.update(
            round=self.state["round"] + 1, clustered_epoch=due, labels=labels
        )
        self._install(task, labels, epoch, reset=bool(self.params.RESET_HEAD))

    def _recluster(self, task: Any, epoch: int) -> np.ndarray:
        p = self.params
        if self._extraction_dataset is None:
            ecfg = copy.deepcopy(self.cfg)
            ecfg.VCF.CLUSTERFIT.TRANSFORMS = p.TRANSFORMS
            self._extraction_dataset = fx.extraction_dataset(ecfg, "TRAIN")
        trunk = task.base_model.trunk
        was_training = trunk.training
        t0 = time.time()
        feats = fx.extract_features(
            [(trunk, p.FEATURE_LAYER, p.POOLING)],
            self._extraction_dataset,
            int(p.BATCHSIZE),
            task.device,
            gather=not self.distributed_kmeans,
        )
        trunk.train(was_training)
        t_extract = time.time() - t0
        labels = None
        if self.distributed_kmeans:
            labels = self._cluster_sharded(feats, epoch, t_extract)
        elif not _dist() or dist.get_rank() == 0:
            labels = self._cluster(feats, epoch, t_extract)
        return fx.broadcast_from_rank0(labels)

    def _cluster_sharded(
        self, feats_local: np.ndarray, epoch: int, t_extract: float
    ) -> Any:
        """DeeperCluster Sec. 4.2: PCA and k-means on every rank's shard; the labels on
        rank 0 (None elsewhere)."""
        p = self.params
        t0 = time.time()
        res = clustering.sharded_kmeans(
            feats_local,
            int(p.NUM_CLUSTERS),
            pca_dim=min(int(p.PCA_DIM), feats_local.shape[1]),
            whiten=bool(p.WHITEN),
            l2_norm=True,
            niter=int(p.NITER),
            seed=int(p.SEED) + epoch,
            inplace=True,
        )
        labels = clustering.gather_rows(res.labels)
        if labels is None:
            return None
        return self._log_round(
            labels,
            int(p.NUM_CLUSTERS),
            "distributed kmeans",
            res.n_empty_reseeded,
            epoch,
            t_extract,
            time.time() - t0,
        )

    def _cluster(self, feats: np.ndarray, epoch: int, t_extract: float) -> np.ndarray:
        p = self.params
        k = int(p.NUM_CLUSTERS)
        deeper = p.get("DEEPER", {}) or {}
        if k > len(feats) and not deeper.get("ENABLED", False):
            raise ValueError(
                f"config.VCF.DEEPCLUSTER.NUM_CLUSTERS={k} is larger than DATA.TRAIN ({len(feats)})"
            )
        t0 = time.time()
        pca_dim = min(int(p.PCA_DIM), feats.shape[1], len(feats))
        x, _ = clustering.preprocess_features(
            feats,
            pca_dim=pca_dim,
            whiten=bool(p.WHITEN),
            l2_norm=True,
            seed=int(p.SEED) + epoch,
            inplace=True,
        )
        reseeded = 0
        algorithm = p.ALGORITHM
        if deeper.get("ENABLED", False):
            # DeeperCluster: cluster code = group * k + sub; the collator adds rotations
            num_sub = int(deeper.NUM_SUB)
            group, sub = clustering.hierarchical_kmeans(
                x,
                int(deeper.NUM_GROUPS),
                num_sub,
                niter=int(p.NITER),
                seed=int(p.SEED) + epoch,
            )
            labels, k = group * num_sub + sub, int(deeper.NUM_GROUPS) * num_sub
            algorithm = "two-level kmeans"
        elif p.ALGORITHM == "pic":
            labels = clustering.run_pic(
                x,
                n_neighbors=int(p.PIC_NEIGHBORS),
                sigma=float(p.PIC_SIGMA),
                seed=int(p.SEED) + epoch,
            )
            k = int(labels.max()) + 1
        else:
            res = clustering.run_kmeans(
                x, k, niter=int(p.NITER), seed=int(p.SEED) + epoch
            )
            labels, reseeded = res.labels, res.n_empty_reseeded
        return self._log_round(
            labels, k, algorithm, reseeded, epoch, t_extract, time.time() - t0
        )

    def _log_round(
        self,
        labels: np.ndarray,
        k: int,
        algorithm: str,
        reseeded: int,
        epoch: int,
        t_extract: float,
        t_cluster: float,
    ) -> np.ndarray:
        """Cluster metrics of the round -> log and ``deepcluster_rounds.jsonl`` (rank 0)."""
        truth = fx.ground_truth(self._extraction_dataset)
        previous = self.state["labels"]
        metrics = clustering.cluster_metrics(
            labels,
            k,
            truth=truth,
            previous=np.asarray(previous) if previous is not None else None,
        )
        record = {
            "round": self.state["round"] + 1,
            "epoch": epoch,
            "algorithm": algorithm,
            "n_empty_reseeded": int(reseeded),
            "extract_s": round(t_extract, 2),
            "cluster_s": round(t_cluster, 2),
            **metrics,
        }
        logging.info(
            f"[vcf] DeepCluster round {record['round']} (epoch {epoch}): {record}"
        )
        out = os.path.join(self.cfg.CHECKPOINT.DIR, "deepcluster_rounds.jsonl")
        with open(out, "a") as f:
            f.write(json.dumps(record) + "\n")
        return labels.astype(np.int64)

    # -- handing the labels to training ----------------------------------------------
    def _install(self, task: Any, labels: np.ndarray, epoch: int, reset: bool) -> None:
        from vissl.data import build_dataloader

        from vissl_clusterfit.data.cluster_sampler import UniformClusterSampler

        dataset = task.datasets["train"]
        if len(labels) != len(dataset):
            raise ValueError(
                f"{len(labels)} cluster labels for {len(dataset)} training samples"
            )
        dataset.label_objs = [labels]
        dataset.labels_init = True
        if self.params.UNIFORM_SAMPLING:
            seed = int(self.cfg.SEED_VALUE)
            task.dataloaders["train"] = build_dataloader(
                dataset=dataset,
                dataset_config=self.cfg.DATA.TRAIN,
                num_dataloader_workers=self.cfg.DATA.NUM_DATALOADER_WORKERS,
                pin_memory=self.cfg.DATA.PIN_MEMORY,
                multi_processing_method=self.cfg.MULTI_PROCESSING_METHOD,
                device=task.device,
                sampler_seed=seed,
                get_sampler=lambda ds, cfg, s: UniformClusterSampler(labels, seed=s),
            )
        sampler = getattr(task.dataloaders["train"], "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        # the iterator of this epoch was created before this hook ran: recreate it so
        # that it (and its workers) see the new labels and sampler
        task.data_iterator = iter(task.dataloaders["train"])
        if reset:
            self._reset_head(task)
        self._installed_epoch = epoch

    def _reset_head(self, task: Any) -> None:
        """Re-initialise the last head identically on every rank and forget its
        optimizer state (momentum refers to the previous cluster ids)."""
        head = task.base_model.heads[-1]
        generator_state = torch.get_rng_state()
        torch.manual_seed(int(self.params.SEED) + 1000 + self.state["round"])
        for module in head.modules():
            if hasattr(module, "reset_parameters") and module is not head:
                module.reset_parameters()
        torch.set_rng_state(generator_state)
        optimizer = getattr(task.optimizer, "optimizer", task.optimizer)
        for param in head.parameters():
            optimizer.state.pop(param, None)
        logging.info(
            f"[vcf] DeepCluster: head re-initialised (round {self.state['round']})"
        )
