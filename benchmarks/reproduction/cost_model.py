"""A preset's wall time predicted from the stage times of an earlier run on this machine
(``--estimate-from <results json>``, e.g. the tiny preset's), without running it.

Cost model, fitted on the first seed of the calibration run: a training stage costs
``startup + c_train[pretext] * images * epochs`` (c_train and startup from N_pre vs
N_pre 2x, which differ only in epochs); N_cf adds its own startup and the clustering
extraction per image; a VISSL linear probe costs ``startup + c_fwd_lin * forward
images`` (train images x epochs + test images at the first and last epoch); the probes
cost ``c_extract * images`` plus logistic-regression fits, linear in the number of
labelled images. Everything scales linearly with the images, so a calibration on a
loaded machine gives a loaded machine's estimate. Why the control experiment has
its own, simpler estimator: ``benchmarks.wall_time``.
"""

import dataclasses
from typing import Any, Dict, List, Tuple

from benchmarks.plugin import LAYERS
from benchmarks.reproduction.settings import Preset, ints, names
from benchmarks.wall_time import (
    DIGITS_TEST,
    DIGITS_TRAIN,
    FMNIST_TEST,
    FMNIST_TRAIN,
    limited,
    training_stage_s,
)


def lin_images(s: Dict[str, Any], n_train: int, n_test: int) -> int:
    """Images a VISSL linear probe forwards: the pipeline sets
    TEST_EVERY_NUM_EPOCH=eval_epochs, so VISSL tests after the first and the last epoch.
    """
    passes = 1 if s["eval_epochs"] == 1 else 2
    return s["eval_epochs"] * n_train + passes * n_test


@dataclasses.dataclass
class CostModel:
    c_train: Dict[str, float]  # s per image and epoch, per pretext
    start_train: Dict[str, float]  # start-up s of a training stage, per pretext
    start_ncf: Dict[str, float]  # start-up s of an N_cf stage (clustering excluded)
    c_cluster: float  # clustering extraction s per image
    start_lin: float  # start-up s of a linear probe
    c_lin: float  # linear probe s per forward image
    c_ext: float  # probes' feature extraction s per image
    fit_a: float  # logistic regression fit: a + b * labelled images
    fit_b: float
    calibration: str
    calibration_load_avg: Any

    def describe(self) -> Dict[str, Any]:
        return {
            "c_train_s_per_image_epoch": {
                k: round(v, 5) for k, v in self.c_train.items()
            },
            "startup_train_s": {k: round(v, 1) for k, v in self.start_train.items()},
            "startup_ncf_s": {k: round(v, 1) for k, v in self.start_ncf.items()},
            "c_cluster_extract_s_per_image": round(self.c_cluster, 5),
            "c_linear_s_per_forward_image": round(self.c_lin, 5),
            "c_probe_extract_s_per_image": round(self.c_ext, 5),
            "logreg_fit_s": f"{self.fit_a:.3f} + {self.fit_b:.2e} * labelled images",
            "calibration": self.calibration,
            "calibration_load_avg": self.calibration_load_avg,
        }


# --------------------------------------------------------------------------- calibration


def _train_costs(
    st: Dict[str, float], pretexts: List[str], d0: int, e0: int
) -> Tuple[Dict[str, float], Dict[str, float], Dict[str, float]]:
    c_train, start_train, start_ncf = {}, {}, {}
    for x in pretexts:
        t1, t2 = st.get(f"npre_{x}"), st.get(f"npre2x_{x}")
        if t1 is None:
            continue
        if t2 is not None and t2 > t1:
            c_train[x] = (t2 - t1) / (d0 * e0)
            start_train[x] = max(0.0, t1 - c_train[x] * d0 * e0)
        else:
            start_train[x] = 5.0
            c_train[x] = max(t1 - 5.0, 0.0) / (d0 * e0)
        ncf = [v for k, v in st.items() if k.startswith(f"ncf_{x}_k")]
        if ncf:
            start_ncf[x] = max(0.0, sum(ncf) / len(ncf) - c_train[x] * d0 * e0)
    if not c_train:
        raise ValueError(
            "the calibration run has no N_pre stage times (its stages were reused)"
        )
    return c_train, start_train, start_ncf


def _linear_cost(st: Dict[str, float], cs: Dict[str, Any], start_lin: float) -> float:
    lin_fm = [
        v
        for k, v in st.items()
        if k.startswith("linear_") and not k.startswith("linear_digits_")
    ]
    lin_dg = [v for k, v in st.items() if k.startswith("linear_digits_")]
    imgs_fm = lin_images(
        cs,
        limited(cs["eval_train_limit"], FMNIST_TRAIN),
        limited(cs["eval_test_limit"], FMNIST_TEST),
    )
    c_lin = max(0.0, sum(lin_fm) / len(lin_fm) - start_lin) / imgs_fm if lin_fm else 0.0
    if lin_dg:
        c_lin = max(
            c_lin,
            max(0.0, sum(lin_dg) / len(lin_dg) - start_lin)
            / lin_images(cs, DIGITS_TRAIN, DIGITS_TEST),
        )
    return c_lin


def _probe_costs(
    out: Dict[str, Any], probe_draws: int
) -> Tuple[float, List[Tuple[int, float]]]:
    """Probes' extraction s per image, and (labelled images, s per fit) samples."""
    ext_t, ext_n, fits = 0.0, 0, []
    for res in out["probes"].values():
        for r in res["targets"].values():
            ext_t += r["time_s"]["extract"]
            ext_n += r["n_train"] + r["n_test"]
            nl = len(r["dims"])
            for probe, t in r["time_s"].items():
                if probe.startswith("few"):
                    fits.append((int(probe[3:]) * 10, t / (nl * probe_draws)))
                elif probe == "full":
                    fits.append((r["n_train"], t / nl))
    return (ext_t / ext_n if ext_n else 0.0), fits


def _fit_line(fits: List[Tuple[int, float]]) -> Tuple[float, float]:
    """Least squares ``t = a + b * n`` (a, b >= 0); the mean with one distinct n."""
    if len(set(n for n, _ in fits)) < 2:
        return (fits[0][1] if fits else 0.0), 0.0
    xs, ys = [n for n, _ in fits], [t for _, t in fits]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum(
        (x - mx) ** 2 for x in xs
    )
    b = max(b, 0.0)
    return max(my - b * mx, 0.0), b


def calibrate(calib: Dict[str, Any]) -> CostModel:
    """The cost model from a results JSON of the reproduction (its first seed)."""
    cs = calib["settings"]
    seed = next(iter(calib["per_seed"]))
    st = calib["stage_time_s"][seed]
    out = calib["per_seed"][seed]
    d0, e0 = limited(cs["data_limit"], FMNIST_TRAIN), cs["epochs"]
    c_train, start_train, start_ncf = _train_costs(st, names(cs["pretexts"]), d0, e0)
    # clustering extraction per image (inside start_ncf at d0 images; rescaled later)
    ext = [m["time_s"]["extract"] for c in out["clusters"].values() for m in c.values()]
    start_lin = min(start_train.values())
    c_ext, fits = _probe_costs(out, cs["probe_draws"])
    a, b = _fit_line(fits)
    return CostModel(
        c_train=c_train,
        start_train=start_train,
        start_ncf=start_ncf,
        c_cluster=(sum(ext) / len(ext)) / d0 if ext else 0.0,
        start_lin=start_lin,
        c_lin=_linear_cost(st, cs, start_lin),
        c_ext=c_ext,
        fit_a=a,
        fit_b=b,
        calibration=calib.get("benchmark"),
        calibration_load_avg=calib["machine"].get("load_avg_at_start"),
    )


# --------------------------------------------------------------------------- prediction


def _training_s(p: Preset, m: CostModel, d0: int) -> Tuple[float, float]:
    d, e = limited(p.data_limit, FMNIST_TRAIN), p.epochs
    ref = next(iter(m.c_train))
    npre, ncf = 0.0, 0.0
    for x in names(p.pretexts):
        c = m.c_train.get(x, m.c_train[ref])
        s0 = m.start_train.get(x, m.start_train[ref])
        twice = training_stage_s(s0, c, d, 2 * e) if p.with_2x else 0.0
        npre += training_stage_s(s0, c, d, e) + twice
        sn = m.start_ncf.get(x, m.start_ncf.get(ref, s0))
        # N_cf's start-up includes its clustering extraction, rescaled to d images
        ncf += len(ints(p.ks)) * training_stage_s(sn + m.c_cluster * (d - d0), c, d, e)
    return npre, ncf


def _linear_s(p: Preset, m: CostModel, n_models: int) -> float:
    s = dataclasses.asdict(p)
    per_model = m.start_lin + m.c_lin * lin_images(
        s,
        limited(p.eval_train_limit, FMNIST_TRAIN),
        limited(p.eval_test_limit, FMNIST_TEST),
    )
    if p.eval_digits:
        per_model += m.start_lin + m.c_lin * lin_images(s, DIGITS_TRAIN, DIGITS_TEST)
    return n_models * per_model


def _probes_s(p: Preset, m: CostModel, n_models: int) -> float:
    if not p.probes:
        return 0.0
    per_model = 0.0
    for target in names(p.probe_targets):
        fmnist = target == "fmnist"
        n_tr = limited(p.probe_n_train, FMNIST_TRAIN) if fmnist else DIGITS_TRAIN
        n_te = limited(p.probe_n_test, FMNIST_TEST) if fmnist else DIGITS_TEST
        per_model += m.c_ext * (n_tr + n_te)
        for shots in ints(p.probe_shots):
            per_model += len(LAYERS) * p.probe_draws * (m.fit_a + m.fit_b * 10 * shots)
        if target in names(p.probe_full):
            per_model += len(LAYERS) * (m.fit_a + m.fit_b * n_tr)
    return n_models * per_model


def calibrated_estimate(p: Preset, calib: Dict[str, Any]) -> Dict[str, Any]:
    """Seconds the preset ``p`` would take per part and in total, from the stage times
    of an earlier run (``calib``: a results JSON of the reproduction) on this machine,
    every rate fitted from that run (``calibrate``); ``_model`` describes the fitted
    cost model."""
    m = calibrate(calib)
    d0 = limited(calib["settings"]["data_limit"], FMNIST_TRAIN)
    n_models = len(names(p.pretexts)) * (1 + int(p.with_2x) + len(ints(p.ks))) + int(
        p.with_random
    )
    npre, ncf = _training_s(p, m, d0)
    est: Dict[str, Any] = {
        "train N_pre / N_pre 2x": npre,
        "train N_cf (incl. clustering)": ncf,
        "VISSL linear probes": _linear_s(p, m, n_models),
        "probes.py": _probes_s(p, m, n_models),
    }
    seeds = len(ints(p.seeds))
    est = {k: round(v * seeds, 0) for k, v in est.items()}
    est["total"] = round(sum(est.values()), 0)
    est["_model"] = m.describe()
    return est
