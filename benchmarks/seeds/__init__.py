"""The pieces of ``benchmarks.clusterfit_seeds`` (the script is the entry point):

- ``analysis``: N_cf's K chosen on validation (per family: N_cf from N_pre, N_cf from
  a random N_pre), the paired comparisons and the pre-registered hypotheses, with no
  verdict before every pre-registered seed is finished;
- ``store``: one records file per finished seed (a finished seed is never recomputed)
  and the reuse of an earlier run's records for the arms it already has;
- ``render``: the report's Markdown.
"""
