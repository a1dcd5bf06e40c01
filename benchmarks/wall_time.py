"""What the benchmarks' two wall-time estimators share: the data sets' sizes, "a
limit of -1 means all images", and the cost of one training stage.

There are two estimators because they predict different experiments from different
measurements, not the same thing twice:

- ``benchmarks.control_experiment.throughput_estimate`` (the control experiment, Sec.
  3.2): its report.json keeps only each stage's CPU seconds, and a tiny calibration run
  trains too few images to separate start-up from training; so each stage's fixed cost
  is the median measured stage, and training is priced at an assumed throughput
  (``--img-per-s``, measured separately on the README demo).
- ``benchmarks.reproduction.cost_model.calibrated_estimate`` (the reproduction, Sec.
  4.2): its results JSON holds N_pre and N_pre 2x, which differ only in epochs, so the
  per-image cost and the start-up of each pretext are fitted from the run itself, with
  N_cf's clustering extraction, VISSL's linear probes and the logistic-regression fits
  as further fitted terms.

Both price a training stage as ``start-up + seconds per image x images x epochs``
(``training_stage_s``; the control experiment in its throughput form, images x epochs
/ img_per_s) and read the same data set sizes and limits.
"""

FMNIST_TRAIN, FMNIST_TEST = 60000, 10000  # Fashion-MNIST's train / test images
DIGITS_TRAIN, DIGITS_TEST = 1257, 540  # scikit-learn digits: the probes' split (1797)


def limited(limit: int, total: int) -> int:
    """Images used under a ``*_limit`` setting: ``total`` when the limit is negative
    (the settings' -1 = all)."""
    return total if limit < 0 else limit


def training_stage_s(
    startup_s: float, s_per_image_epoch: float, images: int, epochs: int
) -> float:
    """Seconds of one VISSL training stage: its fixed start-up plus ``images`` x
    ``epochs`` at ``s_per_image_epoch``."""
    return startup_s + s_per_image_epoch * images * epochs
