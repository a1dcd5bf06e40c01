"""benchmarks.kmeans_gpu: the tiny CPU run writes its results; without CUDA the
full run says so and exits 0 without writing anything."""

import json
import os

import numpy as np
import torch

from benchmarks import kmeans_gpu


def test_quick_run_writes_results(tmp_path) -> None:
    assert kmeans_gpu.main(["--quick", "--out", str(tmp_path)]) == 0
    payload = json.loads((tmp_path / "kmeans_gpu_quick.json").read_text())
    assert payload["status"] == "complete", payload.get("status")
    assert (payload["n"], payload["d"], payload["k"]) == (4000, 64, 20)
    rows = {r["setting"]: r for r in payload["rows"]}
    assert set(rows) == {"fp32/auto", "fp32/512"}, rows
    for row in rows.values():
        assert row["status"] == "ok", row
        assert row["assign_s"] > 0 and 1 <= row["iters"] <= 3, row
        assert np.isfinite(row["objective"]) and row["objective"] > 0, row
    # The block size changes the float32 GEMM's rounding, not the k-means result.
    assert rows["fp32/auto"]["objective"] == rows["fp32/512"]["objective"], rows
    assert payload["machine"]["command"] and payload["machine"]["git_commit"]
    md = (tmp_path / "kmeans_gpu_quick.md").read_text()
    assert "| setting |" in md and "fp32/512" in md and "- command:" in md, md


def test_without_cuda_says_so_and_writes_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert kmeans_gpu.main(["--out", str(tmp_path)]) == 0
    assert "no GPU present" in capsys.readouterr().out
    assert os.listdir(tmp_path) == []


def test_synthetic_features_are_seeded_unit_rows() -> None:
    cpu = torch.device("cpu")
    a = kmeans_gpu.synthetic_features(300, 16, 5, 1.0, seed=1, device=cpu)
    b = kmeans_gpu.synthetic_features(300, 16, 5, 1.0, seed=1, device=cpu)
    c = kmeans_gpu.synthetic_features(300, 16, 5, 1.0, seed=2, device=cpu)
    assert a.shape == (300, 16) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    norms = a.norm(dim=1)
    assert torch.allclose(norms, torch.ones_like(norms), atol=1e-5), norms
