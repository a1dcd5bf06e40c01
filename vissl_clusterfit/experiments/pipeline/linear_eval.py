"""A linear-evaluation stage: VISSL's layer-wise linear probes of a frozen trunk
(Yan et al. 2020, Sec. 4.2), reused when ``linear_eval.json`` holds the same checkpoint."""

import json
import os
from typing import Dict, List, Optional

from vissl_clusterfit.experiments.checkpoints import read_final_test_accuracy
from vissl_clusterfit.experiments.pipeline.stages import StageRunner


def linear_eval(
    runner: StageRunner,
    name: str,
    checkpoint: str,
    target: str = "fmnist",
    extra: Optional[List[str]] = None,
) -> Dict[str, float]:
    """Top-1 per layer of ``checkpoint``'s probes; ``extra`` overrides make the probed
    trunk match the checkpoint's (e.g. a Sobel stem)."""
    s = runner.settings
    folder = os.path.join(runner.out, name)
    done = os.path.join(folder, "linear_eval.json")
    if os.path.isfile(done):
        with open(done) as f:
            result = json.load(f)
        if result.get("checkpoint") == checkpoint:
            print(f"[pipeline] {name}: reusing {done}", flush=True)
            return result["top1"]
    overrides = [
        f"config={runner.config_name('linear', target=target)}",
        f"config.MODEL.WEIGHTS_INIT.PARAMS_FILE={checkpoint}",
        f"config.OPTIMIZER.num_epochs={s.eval_epochs}",
        # the report reads the final test pass; VISSL also always tests after epoch 0
        f"config.TEST_EVERY_NUM_EPOCH={s.eval_epochs}",
    ]
    if target == "fmnist" or s.preset != "fmnist":
        overrides += [
            f"config.DATA.TRAIN.DATA_LIMIT={s.eval_train_limit}",
            f"config.DATA.TEST.DATA_LIMIT={s.eval_test_limit}",
            *runner.data_overrides(),
        ]
    runner.run_stage(name, overrides + list(extra or []))
    top1 = read_final_test_accuracy(os.path.join(folder, "metrics.json"))
    with open(done, "w") as f:
        json.dump({"checkpoint": checkpoint, "top1": top1}, f, indent=2)
    return top1
