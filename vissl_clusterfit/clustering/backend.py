"""Where k-means runs: faiss (CPU or GPU) or the torch Lloyd route on a device.

DeeperCluster (Caron et al., ICCV 2019, Sec. 4.2) runs k-means on the GPUs. faiss-gpu
wheels need CUDA 12 libraries, so on a machine with only CUDA 13 the GPU is reached
through torch instead: :func:`.distributed_kmeans` and :func:`.assign.nearest_centroids`
compute on the device of their tensors. The one place that decides, so every route
logs and records the same names: ``faiss-cpu``, ``faiss-gpu``, ``torch-cuda``,
``torch-cpu``.
"""

from typing import Tuple

import torch

from .kmeans import faiss_has_gpu


__all__ = ["BACKENDS", "choose_backend", "torch_device"]

BACKENDS = ("auto", "faiss", "torch")
# Share of the free GPU memory the features may take; the rest is left to the
# centroids, the float64 sums and the row blocks of the assignment.
_GPU_SHARE = 0.7


def torch_device(nbytes: int = 0) -> torch.device:
    """The current CUDA device when one is present and ``nbytes`` of features fit
    in its free memory (with room for the k-means buffers); else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    device = torch.device("cuda", torch.cuda.current_device())
    if nbytes:
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes > _GPU_SHARE * free:
            return torch.device("cpu")
    return device


def choose_backend(backend: str = "auto") -> Tuple[str, torch.device]:
    """(backend name, torch device) for training and assignment.

    ``auto``: faiss on GPU when this faiss build has GPU support, else the torch route
    on CUDA when a GPU is present, else faiss on the CPU. ``faiss``: faiss (on its GPU
    when it has one). ``torch``: the torch route, on CUDA when present.
    """
    if backend not in BACKENDS:
        raise ValueError(f"k-means backend {backend!r}: use one of {BACKENDS}")
    cuda = torch.cuda.is_available()
    if backend == "faiss" or (backend == "auto" and (faiss_has_gpu() or not cuda)):
        return ("faiss-gpu" if faiss_has_gpu() else "faiss-cpu"), torch.device("cpu")
    device = torch_device()
    return ("torch-cuda" if device.type == "cuda" else "torch-cpu"), device
