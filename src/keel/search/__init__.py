"""Hyperparameter search (``keel tune``) on Optuna; see :func:`keel.search.study.tune`."""

from keel.search.study import TUNE_FILE, TuneResult, tune

__all__ = ["TUNE_FILE", "TuneResult", "tune"]
