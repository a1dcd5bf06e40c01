"""ClusterFit end to end: ``driver`` (the stages), ``settings`` (``pipeline.<key>=<value>``)
and ``report`` (report.json, report.md, plots)."""
