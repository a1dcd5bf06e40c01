"""Train steps registered with VISSL (``config.TRAINER.TRAIN_STEP_NAME``)."""

from vissl_clusterfit.train_steps import precision_train_step  # noqa: F401
