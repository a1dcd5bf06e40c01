"""Fixtures of the compat tests."""

import pytest
import torch.distributed as dist


@pytest.fixture
def gloo_group(tmp_path):
    """A one-process gloo group (VISSL's samplers and broadcasts need one)."""
    if dist.is_initialized():
        yield
        return
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1
    )
    yield
    dist.destroy_process_group()
