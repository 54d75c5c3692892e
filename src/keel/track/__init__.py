"""Experiment tracking: keel's runs logged to a tracking server of the user's choice.

    keel.track.mlflow.log_run(model_dir, uri=None)   one saved model directory -> one MLflow run

The tracking clients are optional extras (``pip install 'keel[track]'`` for MLflow) and are
imported only when a run is logged; importing ``keel.track`` imports none of them.
"""
