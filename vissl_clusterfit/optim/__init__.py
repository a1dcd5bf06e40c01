"""Optimizer settings that VISSL configs need adapted to a run (schedule length)."""
