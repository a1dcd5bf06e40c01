"""benchmarks.imagenet_cost: the fits, the time/memory models and the extrapolation, on
synthetic numbers (nothing is measured here)."""

import math
from typing import Any, Dict, List

import pytest

from benchmarks import cost as ic


TRUE = (2.5e-11, 1.0e-9, 3.0e-8, 2.0e-3)  # s per nKD, nK, nD, constant
GRID = [
    (10000, 100, 256),
    (10000, 1000, 256),
    (40000, 500, 256),
    (40000, 2000, 256),
    (5000, 100, 2048),
    (10000, 500, 2048),
    (20000, 1000, 2048),
]  # (n, K, D)


def _exact(n: float, k: float, d: float, coef=TRUE) -> float:
    return sum(c * f for c, f in zip(coef, ic.time_features(n, k, d)))


def _fit(coef=TRUE, terms=ic.TIME_TERMS) -> ic.LinearFit:
    return ic.LinearFit(tuple(terms), tuple(coef), ())


def test_fit_time_recovers_known_coefficients() -> None:
    fit = ic.fit_time(GRID, [_exact(*p) for p in GRID])
    for got, want in zip(fit.coef, TRUE):
        assert got == pytest.approx(want, rel=1e-6), (fit.coef, TRUE)
    assert fit.max_abs_rel_residual < 1e-9, fit.rel_residuals
    big = (1_281_167, 16000, 2048)
    assert fit.predict(ic.time_features(*big)) == pytest.approx(_exact(*big), rel=1e-6)


def test_fit_is_non_negative_and_reports_residuals() -> None:
    # Pure n K D data with +-10% noise: no negative overhead terms, residuals visible.
    noise = [0.1, -0.1, 0.05, -0.05, 0.0, 0.1, -0.1]
    ys = [2e-11 * n * k * d * (1 + e) for (n, k, d), e in zip(GRID, noise)]
    fit = ic.fit_time(GRID, ys)
    assert all(c >= 0 for c in fit.coef), fit.coef
    assert 0.0 < fit.max_abs_rel_residual < 0.15, fit.rel_residuals
    one = ic.fit_time_nkd_only(GRID, ys)
    assert one.terms == ("s_per_nKD",)
    assert one.coef[0] == pytest.approx(2e-11, rel=0.1)
    assert len(one.rel_residuals) == len(GRID)


def test_fit_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="cannot fit"):
        ic.fit_time(GRID[:2], [1.0, 2.0])
    with pytest.raises(ValueError, match="> 0"):
        ic.fit_time(GRID, [1.0] * 6 + [0.0])
    with pytest.raises(ValueError, match="expected 4 terms"):
        _fit().predict((1.0, 2.0))


def test_allreduce_time_of_a_ring() -> None:
    assert ic.allreduce_s(16000, 2048, 1, 10.0, 20.0) == 0.0
    nbytes = (16000 * 2048 + 16000 + 1) * 8
    want = 2 * 7 / 8 * nbytes / 10e9 + 14 * 20e-6  # 8 ranks, 10 GB/s, 20 us a step
    assert ic.allreduce_s(16000, 2048, 8, 10.0, 20.0) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx(0.0462, abs=1e-3)  # ~46 ms per iteration
    with pytest.raises(ValueError):
        ic.allreduce_s(10, 10, 2, 0.0, 0.0)


def test_faiss_time_uses_the_training_rows_and_ideal_threads() -> None:
    per_iter, fixed = _fit(), _fit((1e-11, 0.0, 0.0, 1.0))
    s = ic.Scale()
    assert s.faiss_train_rows == s.n  # 256 * 16,000 > 1.28M: faiss trains on all rows
    want = _exact(s.n, s.k, s.d, fixed.coef) + 50 * _exact(s.n, s.k, s.d)
    assert ic.faiss_kmeans_s(per_iter, fixed, s) == pytest.approx(want)
    assert ic.faiss_kmeans_s(per_iter, fixed, s, threads=8) == pytest.approx(want / 8)
    small_k = ic.Scale(k=100)  # 25,600 training rows
    want = _exact(s.n, 100, s.d, fixed.coef) + 50 * _exact(25600, 100, s.d)
    assert ic.faiss_kmeans_s(per_iter, fixed, small_k) == pytest.approx(want)


def test_distributed_time_is_per_rank_compute_plus_allreduce() -> None:
    per_iter, fixed = _fit(), _fit((1e-11, 0.0, 0.0, 1.0))
    s = ic.Scale()
    total, comm = ic.lloyd_kmeans_s(per_iter, fixed, s, 16, 10.0, 20.0)
    n_local = math.ceil(s.n / 16)
    compute = _exact(n_local, s.k, s.d, fixed.coef) + 50 * _exact(n_local, s.k, s.d)
    assert comm == pytest.approx(51 * ic.allreduce_s(s.k, s.d, 16, 10.0, 20.0))
    assert total == pytest.approx(compute + comm)
    one, comm1 = ic.lloyd_kmeans_s(per_iter, fixed, s, 1, 10.0, 20.0)
    assert comm1 == 0.0 and one > total


def test_lloyd_memory_model() -> None:
    k, d = 16000, 2048
    # ImageNet scale: the centroid update holds 5 K x D float64 (40 bytes an element).
    n = 160_146
    assert ic.lloyd_extra_bytes(n, k, d) == int(40 * k * d + 24 * n)
    # Row blocks are bounded: beyond them every extra row costs its labels/distances.
    a, b = ic.lloyd_extra_bytes(200_000, k, d), ic.lloyd_extra_bytes(300_000, k, d)
    assert b - a == 24 * 100_000
    # Small K, D = 2048: 4096-row blocks of float64 re-ranking dominate: the block in
    # f64, 2 candidate centroids per row and their difference (5 blocks), plus the
    # previous block's difference (2) once there is more than one block.
    rows = (1 << 24) // 4096
    small = ic.lloyd_extra_bytes(20_000, 100, 2048)
    scores = rows * 100 * 4
    assert small == int(100 * 2048 * 28 + 20_000 * 32 + scores + 7 * rows * 2048 * 8)
    one_block = ic.lloyd_extra_bytes(rows, 100, 2048)
    assert one_block == int(100 * 2048 * 28 + rows * 32 + scores + 5 * rows * 2048 * 8)


def test_faiss_memory_model() -> None:
    k, d = 16000, 2048
    n = 1_281_167
    extra = ic.faiss_extra_bytes(n, k, d)
    # training on all rows: 16 bytes per row + 4 K x D float32 + one 4096 x 1024 tile
    assert extra == int(n * 16 + 4 * k * d * 4 + 4096 * 1024 * 4)
    assert extra / (n * d * 4) < 0.06  # ~5% on top of the features
    # subsampling (N > 256 K) copies the training sample
    sub = ic.faiss_extra_bytes(40000, 50, 256)
    assert sub >= 12800 * 256 * 4


def test_gather_peak_of_the_faiss_route() -> None:
    f = 1_281_167 * 2048 * 4
    assert ic.faiss_gather_peak_bytes(1_281_167, 2048, 1) == f
    assert ic.faiss_gather_peak_bytes(1_281_167, 2048, 8) == pytest.approx(2.5 * f, 1)


def test_memory_calibration_fit() -> None:
    model = [1e8, 2e8, 4e8, 8e8]
    measured = [1.2 * m + 3e7 for m in model]
    fit = ic.fit_memory(model, measured)
    assert fit.coef[0] == pytest.approx(1.2, rel=1e-6)
    assert fit.coef[1] == pytest.approx(3e7, rel=1e-5)


def _fits() -> Dict[str, Dict[str, ic.LinearFit]]:
    per = {"cpu_per_iter": _fit(), "cpu_fixed": _fit((1e-11, 0.0, 0.0, 1.0))}
    return {"faiss": per, "distributed": per}


def test_extrapolated_table() -> None:
    mem = {
        "faiss": ic.LinearFit(ic.MEMORY_TERMS, (1.0, 0.0), ()),
        "distributed": ic.LinearFit(ic.MEMORY_TERMS, (2.0, 2**20), ()),
    }
    rows = ic.extrapolate(_fits(), mem, ic.Scale(), [8, 16], 10.0, 20.0)
    assert [(r["backend"][:5], r["processes"]) for r in rows] == [
        ("faiss", 1),
        ("faiss", 8),
        ("faiss", 16),
        ("distr", 1),
        ("distr", 8),
        ("distr", 16),
    ]
    f_gib = 1_281_167 * 2048 * 4 / 2**30
    assert rows[0]["F_local_GiB"] == pytest.approx(f_gib)
    assert rows[1]["kmeans_h"] == pytest.approx(rows[0]["kmeans_h"] / 8)
    assert rows[0]["peak_GiB_model"] == rows[0]["peak_GiB_calibrated"]
    d8 = rows[4]
    assert d8["F_local_GiB"] == pytest.approx(
        math.ceil(1_281_167 / 8) * 2048 * 4 / 2**30
    )
    extra = ic.lloyd_extra_bytes(math.ceil(1_281_167 / 8), 16000, 2048) / 2**30
    assert d8["peak_GiB_model"] == pytest.approx(d8["F_local_GiB"] + extra)
    assert d8["peak_GiB_calibrated"] == pytest.approx(
        d8["F_local_GiB"] + 2 * extra + 2**-10
    )
    assert d8["allreduce_s"] > 0 and rows[3]["allreduce_s"] == 0


def test_extraction_rows() -> None:
    rows = ic.extraction_rows(10.0, 1000.0, 1_281_167, [8], 1261.0)
    assert [r["processes"] for r in rows] == [1, 8, 1, 8]
    assert rows[0]["forward_h"] == pytest.approx(1_281_167 / 10.0 / 3600)
    assert rows[1]["forward_h"] == pytest.approx(rows[0]["forward_h"] / 8)
    both = 1_281_167 * (1 / 10.0 + 1 / 1000.0) / 3600
    assert rows[0]["forward_plus_decode_h"] == pytest.approx(both)
    assert "ASSUMED" in rows[2]["device"]
    assert rows[2]["forward_h"] == pytest.approx(1_281_167 / 1261.0 / 3600)


def _points() -> List[Dict[str, Any]]:
    pts = []
    for backend in ("faiss", "distributed"):
        for n, k, d in GRID:
            t = _exact(n, k, d)
            pts.append(
                {
                    "backend": backend,
                    "N": n,
                    "K": k,
                    "D": d,
                    "n_iter_rows": n,
                    "iterations": 3,
                    "per_iter_cpu_s": t,
                    "per_iter_wall_s": 2 * t,
                    "fixed_cpu_s": t,
                    "fixed_wall_s": 2 * t,
                }
            )
    return pts


def test_holdout_of_an_exact_model_is_exact() -> None:
    rows = ic.holdout_rows(_points())
    assert len(rows) == 4
    for r in rows:
        assert r["held_out"] == "N=20000 D=2048 K=1000"
        assert abs(r["error_pct"]) < 1e-6, r


def test_quiet_run_check() -> None:
    fits = ic.fit_backends(_points())
    n, d, k, n_train, niter = 60000, 2048, 1000, 60000, 20
    measured = _exact(n, k, d) * (1 + niter)
    results = {
        "machine": {"faiss_omp_threads": 2},
        "data": {"args": {"niter": niter}},
        "tables": [
            {
                "title": "k-means alone on the same matrix",
                "rows": [
                    {
                        "N": n,
                        "D": d,
                        "K": k,
                        "n_train": n_train,
                        "ours_run_kmeans_s": measured,
                    }
                ],
            }
        ],
    }
    (row,) = ic.quiet_run_rows(fits, results)
    assert row["predicted_over_measured"] == pytest.approx(1.0, rel=1e-6)
    assert row["measured_threads"] == 2
