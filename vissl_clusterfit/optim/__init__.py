"""Optimizer settings that VISSL configs need adapted to a run: schedule length, and
the learning rate scaled by the global batch with its warm-up kept."""
