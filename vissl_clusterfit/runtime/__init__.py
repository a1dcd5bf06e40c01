"""What the cluster step, the train steps and the hooks share about a run, with no
VISSL imports (so each of them can import it): the timing lines the logs carry
(:mod:`.log_lines`) and the numeric format of a forward pass (:mod:`.precision`)."""
