"""Predict from an exported model without PyTorch: ONNX Runtime and NumPy only.

    >>> from keel.runtime import Predictor
    >>> predictor = Predictor.load("runs/penguins")      # a model directory with model.onnx attached
    >>> predictor.predict({"island": "Biscoe", "bill_length_mm": 45.1, ...})

``import keel.runtime`` loads neither torch nor pandas (nor keel's training modules), so a
serving-only install needs ``numpy``, ``onnxruntime`` and keel's light modules. pandas is used only
when the caller passes a DataFrame, and is then already loaded.
"""

from keel.runtime.predictor import Predictor

__all__ = ["Predictor"]
