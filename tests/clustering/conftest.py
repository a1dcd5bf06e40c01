"""Shared settings for the clustering tests."""

import faiss
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_threaded_numerics():
    # faiss, torch and scikit-learn each bundle their own OpenMP runtime; on a
    # 2-core machine their spin-waiting thread pools starve each other and a
    # 10 ms k-means takes seconds. One thread each keeps the tests fast.
    previous = faiss.omp_get_max_threads(), torch.get_num_threads()
    faiss.omp_set_num_threads(1)
    torch.set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous[0])
    torch.set_num_threads(previous[1])
