"""Which device trains, and in what arithmetic: ``training.device`` and ``training.precision`` resolved.

The training rows move to the device once, as whole tensors; each step then slices them there, so a
GPU run copies nothing per batch and syncs with the host once an epoch (the epoch's loss and the
validation metric). Prediction, metrics and saved models stay on the CPU in float64/float32.
"""

from __future__ import annotations

import torch

from keel.errors import ConfigError
from keel.nn.network import NetworkSpec


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


# training.precision auto on a CPU: bfloat16 (AMX) once a step's matmuls reach this size, measured as rows a step x
# ensemble members x the largest layer's inputs x outputs. On this project's CPU (Xeon, AMX, 2 cores) the
# balanced preset's step (256 rows x 8 members, 256-256) trained 35% faster in bfloat16, 1,024 member-rows
# a step 11% faster, and 256-512 member-rows or a plain MLP at batch 32 no faster or slower (README: Performance).
BF16_CPU_WORK = 1 << 26


def step_work(spec: NetworkSpec, batch_size: int) -> int:
    """The size of a training step's matmuls, as ``BF16_CPU_WORK`` counts it."""
    widths = [spec.input_width, *spec.hidden]
    largest = max((a * b for a, b in zip(widths, widths[1:])), default=0)
    return batch_size * spec.ensemble * largest


def amx_available() -> bool:
    """Whether this CPU has AMX tiles (bfloat16 matrix units) that PyTorch uses."""
    check = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return bool(check()) if check is not None else False


def resolve_precision(setting: str, device: torch.device, work: int = 0) -> str:
    """``auto``: bfloat16 on a GPU that has it, and on a CPU with AMX when a step's matmuls are large
    (``work`` >= ``BF16_CPU_WORK``, see ``step_work``); else float32. Weights, gradients and the optimizer's
    state stay float32 either way (autocast)."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bfloat16" if torch.cuda.is_bf16_supported() else "float32"
    if device.type == "cpu" and work >= BF16_CPU_WORK and amx_available():
        return "bfloat16"
    return "float32"
