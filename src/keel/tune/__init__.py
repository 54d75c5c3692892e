"""Hyperparameter search (``keel tune``) on Optuna; see :func:`keel.tune.study.tune`."""

from keel.tune.study import TUNE_FILE, TuneResult, tune

__all__ = ["TUNE_FILE", "TuneResult", "tune"]
