"""Numeric guards: training stops at the first batch whose loss or gradient is not finite (or skips
that batch, under ``training.nonfinite: skip_batch``), and no saved model holds a NaN or an infinity.

Where the checks sit, and what they cost:

- On the CPU, under ``stop``, every step reads its loss back to the host before the optimizer runs
  (~0.6 µs: on the seed case of ``bench/seed_case.py``, 1000 x 10 rows, MLP 64-32, 50 epochs,
  ~90 µs a step, it is under 1% of the training time). A non-finite loss stops training at its
  step, before its update. A finite loss with a non-finite gradient (rare: it needs activations
  near float32's limit) breaks the weights in its update, and the next step's loss shows it; the
  weights are then checked, and the message says the update before did it.
- Under ``skip_batch`` every step also checks its gradients before the update (one sum over the
  fused step's flat gradient buffer, or one foreach kernel on the autograd path: ~2 µs more),
  since a bad batch must never reach the weights.
- On a GPU under ``stop`` a host read per step would stall the queue, so each step's loss is kept
  on the device and read once at the end of the epoch; the error then names the first bad step.
- After every epoch the weights themselves are checked (~10 µs): an update can overflow from
  finite gradients, or break an embedding row that no loss of the epoch used.

When a check fails the message names the epoch, the step and the likely cause, read from that
batch alone: the largest value of each input column after preprocessing, the target's largest
standardized value, the learning rate and the largest weight.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable, Mapping

import torch

from keel.errors import NumericError
from keel.registry import lookup

if TYPE_CHECKING:
    from keel.data.preprocess import Preprocessor

# training.nonfinite -> whether the policy skips a bad batch (True) or stops training (False).
NONFINITE_POLICIES: dict[str, bool] = {"stop": False, "skip_batch": True}

# An input beyond this after preprocessing is extreme: z-scores reach sqrt(n_rows), min-max values
# stay in [0, 1] and quantile and robust maps near +-5, so only unscaled columns or far outliers do.
_EXTREME_INPUT = 1e3
# A standardized regression target beyond this is an outlier that dominates the loss.
_EXTREME_TARGET = 1e3
# Weights beyond this suggest training has diverged (the learning rate is too high).
_LARGE_WEIGHT = 1e3
# How many columns or tensors a message names.
_SHOWN = 3


def nonfinite_tensors(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """The names of the floating-point tensors that hold a NaN or an infinity, in the given order."""
    items = tensors.items() if isinstance(tensors, Mapping) else tensors
    return [name for name, tensor in items
            if tensor.is_floating_point() and tensor.numel() and not bool(torch.isfinite(tensor).all())]


def check_finite(tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]], where: str) -> None:
    """Refuse weights that hold a NaN or an infinity, before they are written anywhere.

    Args:
        tensors: Named tensors, as ``network.named_parameters()`` gives them; tensors that are not
            floating point are skipped. Not a whole ``state_dict()``: buffers may hold infinities
            by design (the open outer edges of piecewise-linear number bins).
        where: What was about to happen, for the message ("saving the model to runs/m").

    Raises:
        NumericError: Some tensor is not finite; the message names up to three of them.

    Example:
        >>> check_finite(network.named_parameters(), where="saving the model to runs/m")
    """
    bad = nonfinite_tensors(tensors)
    if not bad:
        return
    shown = ", ".join(repr(name) for name in bad[:_SHOWN]) + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
    raise NumericError(
        f"{where}: the weights {shown} hold NaN or infinite values, and a model with them would predict NaN. "
        "Nothing was written. Train again (a lower training.lr, scaled inputs or training.grad_clip avoid "
        "it); training itself stops at the first non-finite step and names its likely cause.")


def numeric_input_names(preprocessor: Preprocessor) -> list[str]:
    """The name of each column of the network's numeric input, for messages: a column's value, its
    missing flag (``'age' (missing flag)``) or a binary column's 0/1."""
    names = []
    for transform in preprocessor.numeric:
        parts = getattr(transform, "parts", None)  # a date's columns: 'signup' (month_sin), ...
        if parts is not None:
            names += [f"{transform.name!r} ({part})" for part in parts]
            continue
        names.append(repr(transform.name))
        if transform.width == 2:
            names.append(f"{transform.name!r} (missing flag)")
    return names


@dataclass
class BatchView:
    """What the guard reads from a bad batch to name a likely cause (tensors on any device)."""

    numeric: torch.Tensor  # (batch, numeric_width) inputs after preprocessing
    target: torch.Tensor  # (batch,) class indices, or standardized values for regression
    task: str
    lr: float
    largest_weight: float


def likely_cause(batch: BatchView, input_names: list[str] | None = None) -> str:
    """The likely cause of a non-finite loss on ``batch``, with the fix, as one clause.

    Extreme inputs and targets are named first (with the columns and how large they get in this
    batch); a learning rate too high is the cause left when the batch looks ordinary.
    """
    causes = []
    missing = _nan_columns(batch.numeric, input_names)
    if missing:  # keel's preprocessing fills missing values: only rows built by hand get here
        causes.append(f"inputs that are NaN ({missing}); fill missing values before training")
    columns = _extreme_columns(batch.numeric, input_names)
    if columns:
        causes.append(f"unscaled inputs or a column with extreme values ({columns}, after preprocessing); scale "
                      "it (preprocessing.normalize: zscore, robust or quantile), or clip or log-transform its values")
    if batch.task == "regression" and len(batch.target):
        largest = float(batch.target.abs().max())
        if not math.isfinite(largest) or largest > _EXTREME_TARGET:
            causes.append(f"a regression target with an extreme value ({largest:.3g} standard deviations from its "
                          "mean in this batch); clip it, log-transform it, or drop the outlier rows")
    weights = (f" and the largest weight had grown to {batch.largest_weight:.3g}"
               if batch.largest_weight > _LARGE_WEIGHT else "")
    causes.append(f"a learning rate too high (training.lr is {batch.lr:g}{weights}); lower it (0.001 suits adam "
                  "and adamw) or set training.grad_clip (1.0, say)")
    if len(causes) == 1:
        return causes[0]
    return "; or else ".join(causes)


def _column_name(index: int, names: list[str] | None, width: int) -> str:
    return names[index] if names is not None and len(names) == width else f"numeric input {index}"


def _shown(parts: list[str]) -> str:
    return ", ".join(parts[:_SHOWN]) + (f" and {len(parts) - _SHOWN} more column(s)" if len(parts) > _SHOWN else "")


def _nan_columns(numeric: torch.Tensor, names: list[str] | None) -> str:
    """The input columns holding a NaN in the batch."""
    if not numeric.numel():
        return ""
    columns = torch.isnan(numeric.detach()).any(0).cpu().nonzero().flatten().tolist()
    return _shown([_column_name(i, names, numeric.shape[1]) for i in columns])


def _extreme_columns(numeric: torch.Tensor, names: list[str] | None) -> str:
    """The (up to three) input columns whose largest |value| in the batch is extreme, largest first."""
    if not numeric.numel():
        return ""
    largest = torch.nan_to_num(numeric.detach().abs(), nan=0.0, posinf=torch.inf).amax(0).double().cpu()
    order = [int(i) for i in torch.argsort(largest, descending=True) if largest[i] > _EXTREME_INPUT]
    return _shown([f"{_column_name(i, names, numeric.shape[1])} reaches {float(largest[i]):.3g}" for i in order])


def _number(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:g}"


@dataclass
class NumericGuard:
    """What training does at a non-finite step (``training.nonfinite``), and what it has skipped.

    Args:
        policy: ``stop`` or ``skip_batch`` (a key of ``NONFINITE_POLICIES``).
        input_names: The name of each numeric input column (:func:`numeric_input_names`), so that
            messages name columns rather than positions.

    Attributes:
        skipped: Epoch -> batches skipped in it (``skip_batch`` only).
    """

    policy: str = "stop"
    input_names: list[str] | None = None
    skipped: dict[int, int] = field(default_factory=dict)
    first_skipped: dict[int, str] = field(default_factory=dict)  # epoch -> "step 3: the loss is nan"

    @property
    def skips(self) -> bool:
        """True when a bad batch is skipped rather than stopping training."""
        return lookup(NONFINITE_POLICIES, "training.nonfinite", self.policy)

    @property
    def total_skipped(self) -> int:
        """Batches skipped over the whole run."""
        return sum(self.skipped.values())

    def bad_step(self, epoch: int, step: int, n_steps: int, problem: str, batch: BatchView,
                 checked_late: bool = False) -> None:
        """Stop at a non-finite step, or count it as skipped.

        Args:
            epoch: The 1-based epoch.
            step: The 1-based step of that epoch.
            n_steps: Steps an epoch.
            problem: What was not finite, as a clause ("the loss is nan").
            batch: The step's batch, to name a likely cause.
            checked_late: The check ran at the end of the epoch (a GPU under ``stop``), so the weights
                may have gone non-finite a step before.

        Raises:
            NumericError: Under ``stop``, always.
        """
        if self.skips and not checked_late:
            self.skipped[epoch] = self.skipped.get(epoch, 0) + 1
            self.first_skipped.setdefault(epoch, f"step {step}: {problem}")
            return
        when = (" (found at the end of the epoch: on a GPU a check every step would stall training, so the "
                "trouble may have begun a step earlier)") if checked_late else ", and its update was not applied"
        raise NumericError(
            f"training stopped at epoch {epoch}, step {step} of {n_steps}: {problem}{when}. Likely cause: "
            f"{likely_cause(batch, self.input_names)}. To skip such batches and go on instead, set "
            "training.nonfinite: skip_batch.", epoch=epoch, step=step)

    def all_skipped(self, epoch: int, n_steps: int, batch: BatchView) -> None:
        """Stop after an epoch whose every batch ``skip_batch`` skipped: nothing is left to train on.

        Raises:
            NumericError: Always.
        """
        first = self.first_skipped.get(epoch)
        raise NumericError(
            f"training stopped at epoch {epoch}: all {n_steps} of its batches had a loss or gradient that is not "
            f"finite{f' (the first, {first})' if first else ''}, so training.nonfinite: skip_batch had nothing left "
            f"to train on. Likely cause: {likely_cause(batch, self.input_names)}.", epoch=epoch)

    def weights_failed(self, epoch: int, names: list[str], batch: BatchView, step: int | None = None) -> None:
        """Stop when an update has left a weight non-finite although its loss was finite.

        Args:
            epoch: The 1-based epoch.
            names: The non-finite tensors.
            batch: The batch of the update that most likely did it.
            step: The step whose loss revealed it; None when the end-of-epoch check found it.

        Raises:
            NumericError: Always; the message names up to three tensors.
        """
        shown = ", ".join(repr(name) for name in names[:_SHOWN]) + (
            f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")
        where = (f"at epoch {epoch}, step {step}: the weights this step ran on" if step is not None
                 else f"after epoch {epoch}: the weights")
        before = f"step {step - 1}'s" if step is not None and step > 1 else "the last one"
        raise NumericError(
            f"training stopped {where} ({shown}) hold NaN or infinite values, though every loss before was finite: "
            f"an update (most likely {before}) had a gradient that was not finite, or overflowed. Likely cause: "
            f"{likely_cause(batch, self.input_names)}.", epoch=epoch, step=step)


def describe_problem(loss: float, gradients_finite: bool) -> str:
    """What was not finite at a step, as a clause for :meth:`NumericGuard.bad_step`."""
    if not math.isfinite(loss):
        return f"the loss is {_number(loss)}" + ("" if gradients_finite else " and so are the gradients")
    return f"the loss is finite ({loss:.4g}) but a gradient is not (it overflowed or is NaN)"
