#!/usr/bin/env python3
"""ClusterFit end to end in one command: N_pre -> clustering -> N_cf -> linear probes.

    python tools/clusterfit_pipeline.py pipeline.output_dir=./runs/demo \
        pipeline.pretexts=rotnet,jigsaw pipeline.num_clusters=50 pipeline.with_2x=true

Settings: pipeline.<key>=<value> (see vissl_clusterfit/experiments/pipeline/driver.py: PipelineSettings);
config.<KEY>=<value> arguments go to every VISSL stage. Each stage is skipped when its
outputs exist. Writes report.json, report.md and PNG plots into pipeline.output_dir and
prints the per-layer table.
"""
import sys
import warnings


# the stack's deprecation chatter (torchvision, pkg_resources, torch.jit) would bury the
# pipeline's own progress lines; each stage's full log is in <stage>/stdout.log
warnings.filterwarnings("ignore")

from vissl_clusterfit.experiments.pipeline.driver import (  # noqa: E402
    main as pipeline_main,
)
from vissl_clusterfit.experiments.pipeline.report import accuracy_table  # noqa: E402


def main(argv) -> None:
    report = pipeline_main(argv)
    for target, results in report["linear_top1"].items():
        print(f"\nLinear probe top-1 (%) on {target}, per layer:\n")
        print(accuracy_table(results))
    print(f"\nReport: {report['settings']['output_dir']}/report.md")


def invoke_main() -> None:
    main(sys.argv[1:])


if __name__ == "__main__":
    invoke_main()
