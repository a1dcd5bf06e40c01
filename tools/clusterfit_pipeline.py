#!/usr/bin/env python3
"""ClusterFit end to end in one command: N_pre -> clustering -> N_cf -> linear probes.

    python tools/clusterfit_pipeline.py pipeline.output_dir=./runs/demo \
        pipeline.pretexts=rotnet,jigsaw pipeline.num_clusters=50 pipeline.with_2x=true

The same as the console script ``vissl-clusterfit-pipeline``; the logic is
``vissl_clusterfit/experiments/pipeline/driver.py`` (settings: ``pipeline.<key>=<value>``,
see its ``settings.py``; ``config.<KEY>=<value>`` arguments go to every VISSL stage).
"""

import warnings


# the stack's deprecation chatter at import (torch.jit.script, pkg_resources,
# torchvision's video transforms) would bury the progress lines (each stage's full log
# is in <stage>/stdout.log); every other warning is shown
warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
warnings.filterwarnings(
    "ignore",
    message=r"(pkg_resources|The 'torchvision\.transforms\._\w+' module) is deprecated",
)

from vissl_clusterfit.experiments.pipeline.driver import invoke_main  # noqa: E402


if __name__ == "__main__":
    invoke_main()
