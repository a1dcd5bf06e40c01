"""Keep the cluster step out of the training run's random streams.

Extraction and clustering run inside a training run (the hooks' ``on_start`` /
``on_phase_start``). Whatever they draw from the global generators (data loader seeds,
PCA samples, weight init of a rebuilt model) would shift every later draw of the
training, so a run that reuses label files, or resumes, would train differently from
the run that made them. ``preserved_rng`` restores torch's, numpy's and Python's global
generators after the block.
"""

import contextlib
import random
from typing import Iterator

import numpy as np
import torch


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    torch_state = torch.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    numpy_state = np.random.get_state()
    python_state = random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(torch_state)
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)
        np.random.set_state(numpy_state)
        random.setstate(python_state)
