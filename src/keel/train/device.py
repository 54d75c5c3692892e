"""Which device trains, and in what arithmetic: ``training.device`` and ``training.precision`` resolved.

The training rows move to the device once, as whole tensors; each step then slices them there, so a
GPU run copies nothing per batch and syncs with the host once an epoch (the epoch's loss and the
validation metric). Prediction, metrics and saved models stay on the CPU in float64/float32.
"""

from __future__ import annotations

import torch

from keel.errors import ConfigError


def resolve_device(setting: str) -> torch.device:
    """``auto`` is the first GPU when PyTorch sees one, else the CPU; an unusable GPU is a ConfigError."""
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(setting)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"training.device is {setting!r} but PyTorch sees no GPU (torch {torch.__version__}, {build}); "
                "use training.device: cpu (or auto), or install a CUDA build of PyTorch on a machine with a GPU.")
        count = torch.cuda.device_count()
        if device.index is not None and device.index >= count:
            raise ConfigError(
                f"training.device is {setting!r} but PyTorch sees {count} GPU(s), numbered 0 to {count - 1}; "
                "pick one of those.")
    return device


def resolve_precision(setting: str, device: torch.device) -> str:
    """``auto`` is bfloat16 on a GPU that has it (autocast; weights and optimizer stay float32), else float32.

    On this project's CPUs bfloat16 was faster for wide networks but not for the small ones most
    tables get, so the CPU default stays float32 (see the README's Performance section).
    """
    if setting != "auto":
        return setting
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bfloat16"
    return "float32"
