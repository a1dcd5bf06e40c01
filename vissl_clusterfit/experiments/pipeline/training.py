"""A training stage: N_pre, N_pre 2x or N_cf (Yan et al. 2020, Sec. 3.1), reused when
its final checkpoint exists."""

import os
from typing import List

from vissl_clusterfit.experiments.checkpoints import final_checkpoint
from vissl_clusterfit.experiments.pipeline.settings import ncf_seed
from vissl_clusterfit.experiments.pipeline.stages import StageRunner


def train(
    runner: StageRunner,
    name: str,
    config: str,
    overrides: List[str],
    from_npre_labels: bool = False,
) -> str:
    """Train one stage (reused when its final checkpoint exists). A model trained on
    labels derived from N_pre (``from_npre_labels``) gets its own initial weights:
    SEED_VALUE ``ncf_seed(seed)``."""
    folder = os.path.join(runner.out, name)
    ckpt = final_checkpoint(folder)
    if ckpt:
        print(f"[pipeline] {name}: reusing {ckpt}", flush=True)
        return ckpt
    seed = ncf_seed(runner.settings.seed) if from_npre_labels else None
    runner.run_stage(name, [f"config={config}", *overrides], seed=seed)
    ckpt = final_checkpoint(folder)
    if not ckpt:
        raise RuntimeError(
            f"stage {name} finished without a final checkpoint in {folder}"
        )
    return ckpt
