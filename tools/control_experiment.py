#!/usr/bin/env python3
"""ClusterFit's control experiment (Sec. 3.2, Fig. 3) in one command.

    python tools/control_experiment.py control.preset=small control.output_dir=./runs/control_small

The same as the console script ``vissl-clusterfit-control``; the logic is
``vissl_clusterfit/experiments/control/driver.py`` (settings: ``control.<key>=<value>``,
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

from vissl_clusterfit.experiments.control.driver import invoke_main  # noqa: E402


if __name__ == "__main__":
    invoke_main()
