"""DeepCluster on features before vs after the last ReLU, over seeds: the pre-registered
comparison of benchmarks/README.md ("Pre-registered: DeepCluster's features before or
after the last ReLU").

Per seed, DeepCluster with ``VCF.DEEPCLUSTER.PREACTIVATION=true`` is trained in the work
dir of ``benchmarks.deepcluster_seeds`` (same settings) and compared with that run's
post-ReLU DeepCluster of the same seed (trained there if missing), both probed by
``deepcluster_seeds.probe_all``.

Example (from the repository root)::

    .venv/bin/python -m benchmarks.deepcluster_preactivation --seeds 0,1,2
"""

from typing import Any, Dict, List, Optional

from benchmarks import common, deepcluster_seeds as ds


PRIMARY = "fmnist full res5"


def main(argv: Optional[List[str]] = None) -> Dict[str, Any]:
    args = ds.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",") if s]
    pre, post = {}, {}
    for seed in seeds:
        post[seed] = ds.probe_all(args, ds.train_deepcluster(args, seed))
        pre[seed] = ds.probe_all(args, ds.train_deepcluster(args, seed, True))
    cells = ds.paired_cells(pre, post)
    d = cells[PRIMARY]
    default = "True" if d.ci_low is not None and d.ci_low > 0 else "False"
    lines = [f"# DeepCluster: pre-activation - post-ReLU features, seeds {seeds}", ""]
    lines += common.header_lines(common.machine_info())
    lines += ["", f"Primary ({PRIMARY}): {ds.format_ci(d)}; decision: PREACTIVATION default "
              f"{default} (True only if the CI is above 0)", ""]  # fmt: skip
    lines += ["| probe layer | pre - post, mean [95% CI] |", "|---|---|"]
    lines += [f"| {c} | {ds.format_ci(x)} |" for c, x in cells.items()]
    result = {
        "command": common.command_line(),
        "machine": common.machine_info(),
        "args": vars(args),
        "seeds": seeds,
        "probes": {"preactivation": pre, "post_relu": post},
        "differences": {c: x.as_dict() for c, x in cells.items()},
        "default": default,
    }
    common.write_json(common.results_path("deepcluster_preactivation", "json"), result)
    md = "\n".join(lines) + "\n"
    common.write_text(common.results_path("deepcluster_preactivation", "md"), md)
    print(md)
    return result


if __name__ == "__main__":
    main()
