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


__all__ = ["BACKENDS", "DEVICES", "choose_backend", "torch_device"]

BACKENDS = ("auto", "faiss", "torch")
DEVICES = ("auto", "cpu", "cuda")
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


def choose_backend(
    backend: str = "auto", device: str = "auto"
) -> Tuple[str, torch.device]:
    """(backend name, torch device) for training and assignment.

    ``auto``: faiss on GPU when this faiss build has GPU support, else the torch route
    on CUDA when a GPU is present, else faiss on the CPU. ``faiss``: faiss (on its GPU
    when it has one). ``torch``: the torch route, on CUDA when present.

    ``device`` pins the device instead of taking the GPU when there is one: ``cpu``
    (e.g. the CPU reference of a GPU run on the same machine) or ``cuda`` (an error,
    not a silent CPU run, when the requested GPU route is not available).
    """
    if backend not in BACKENDS:
        raise ValueError(f"k-means backend {backend!r}: use one of {BACKENDS}")
    if device not in DEVICES:
        raise ValueError(f"k-means device {device!r}: use one of {DEVICES}")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise ValueError(
            "k-means device 'cuda' was requested but torch.cuda.is_available() is "
            "False: use device 'cpu' or 'auto', or run on a machine with a GPU"
        )
    if device == "cpu":
        if backend == "torch":
            return "torch-cpu", torch.device("cpu")
        return "faiss-cpu", torch.device("cpu")
    if device == "cuda" and backend == "faiss" and not faiss_has_gpu():
        raise ValueError(
            "k-means backend 'faiss' on device 'cuda' needs a faiss build with GPU "
            "support (faiss-gpu): use backend 'torch' (or 'auto') for the GPU"
        )
    if backend == "faiss" or (backend == "auto" and (faiss_has_gpu() or not cuda)):
        return ("faiss-gpu" if faiss_has_gpu() else "faiss-cpu"), torch.device("cpu")
    found = torch_device()
    return ("torch-cuda" if found.type == "cuda" else "torch-cpu"), found
