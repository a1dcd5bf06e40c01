#!/usr/bin/env python3
"""ClusterFit's control experiment (Sec. 3.2, Fig. 3) in one command: supervised N_pre
on noisy labels for each p and seed, N_cf over a K sweep, distillation and prototype,
res5 linear probes on four targets, report.md / report.json / fig3_control.png.

    python tools/control_experiment.py control.preset=small control.output_dir=./runs/control_small

Settings: control.<key>=<value> (see vissl_clusterfit/experiments/control/driver.py:
ControlSettings; control.preset=tiny|small|full sets the defaults); config.<KEY>=<value>
arguments go to every VISSL stage. Each stage is skipped when its outputs exist.
"""
import sys
import warnings


# the stack's deprecation chatter would bury the progress lines; every stage's full log
# is in <stage>/stdout.log
warnings.filterwarnings("ignore")

from vissl_clusterfit.experiments.control.driver import (  # noqa: E402
    main as control_main,
)


def main(argv) -> None:
    report = control_main(argv)
    out = report["settings"]["output_dir"]
    print(
        f"\nstages run now: {len(report['stages_run_now'])}; "
        f"wall time {report['total_time_s']:.0f} s"
    )
    print(f"Report: {out}/report.md (plot: {out}/fig3_control.png)")


def invoke_main() -> None:
    main(sys.argv[1:])


if __name__ == "__main__":
    invoke_main()
