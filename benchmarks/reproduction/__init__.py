"""The pieces of ``benchmarks.clusterfit_reproduction`` (the script is the entry point):

- ``settings``: presets, flags, the config check, display order of the models;
- ``runner``: the pipelines and probes of one seed, resumable;
- ``comparison``: per-seed accuracies, mean ± std over seeds, N_cf vs N_pre / N_pre 2x;
- ``cost_model``: a preset's wall time predicted from an earlier run's stage times
  (why the control experiment has its own estimator: ``benchmarks.wall_time``);
- ``render``: the report's tables, figure and Markdown.
"""
