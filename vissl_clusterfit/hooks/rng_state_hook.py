"""``RngStateHook``: the global random generators travel with VISSL's checkpoints, so
a resumed run trains exactly like an uninterrupted one (bit-identical on CPU).

VISSL 0.1.6 seeds torch, numpy and Python once per run and never saves their states,
so after a resume the data augmentation draws from a re-seeded generator. At the end of
every training phase this hook gathers every rank's states (``cluster_step.rng``); it
runs before VISSL's checkpoint hook (``hook_generator`` puts it first), so the states
land in the checkpoint written at that phase end. VISSL does not hand hook states back
on resume: ``on_start`` restores them from ``task.checkpoint`` itself. Persistent
DataLoader workers (``config.VCF.DATA.PERSISTENT_WORKERS``, the GPU configs) keep their
own random streams across epochs, which no checkpoint holds: a resume then logs that
its augmentations differ.
"""

import logging
from typing import Any, Dict

from vissl_clusterfit.cluster_step.rng import gather_rng_states, restore_rng_states
from vissl_clusterfit.compat.phase_iterators import workers_persist
from vissl_clusterfit.hooks.base import VcfHook


class RngStateHook(VcfHook):
    def __init__(self) -> None:
        super().__init__()
        self.state: Dict[str, Any] = {}

    def get_classy_state(self) -> Dict[str, Any]:
        return dict(self.state)

    def set_classy_state(self, state: Dict[str, Any]) -> None:
        self.state = dict(state)

    def on_start(self, task: Any) -> None:
        checkpoint = getattr(task, "checkpoint", None) or {}
        saved = self.checkpointed_state(task)
        if saved and restore_rng_states(saved, checkpoint):
            logging.info("[vcf] random generator states restored from the checkpoint")
        elif checkpoint and not saved:
            logging.warning(
                "[vcf] the checkpoint holds no random generator states (written "
                "without vissl_clusterfit's hooks): data augmentation after this "
                "resume differs from an uninterrupted run"
            )
        if checkpoint and workers_persist(
            getattr(task, "dataloaders", {}).get("train")
        ):
            logging.warning(
                "[vcf] config.VCF.DATA.PERSISTENT_WORKERS=True: the DataLoader workers "
                "start new random streams at this resume, so data augmentation differs "
                "from an uninterrupted run (set it False for exact resumes)"
            )

    def on_phase_end(self, task: Any) -> None:
        if task.train:
            self.state = gather_rng_states(task.train_phase_idx, task.iteration) or {}
