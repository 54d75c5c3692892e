"""Pruning: a smaller model from a trained one, by whole hidden neurons or by single weights.

Structured pruning removes the ``amount`` share of each hidden layer's neurons (for a ResNet,
of each residual block's inner width, since the identity skips fix the residual width), so every
exported matrix really has fewer rows and columns and runs faster. A neuron's importance is the
product of two L2 norms: of its incoming weights (with a batch or layer norm's scale folded in)
and of its outgoing weights (the next layer's column, or the ensemble heads' rows). The product,
not either norm alone, because a ReLU network computes the same function when a neuron's incoming
weights are multiplied by c and its outgoing ones divided by c: the product is blind to that
rescaling, and a neuron is only unimportant when little goes in or little comes out.

Unstructured pruning zeroes the ``amount`` share of all linear weights with the smallest
magnitudes, over the whole model at once. The shapes do not change: a dense ONNX file is as large
and as slow as before, only better compressible (``keel.export.measure`` reports the zipped size).

Either way the result is an ordinary keel model (save, load, export, predict), optionally
fine-tuned for a few epochs on given rows with the model's own training settings and the
training loop of ``keel.train.trainer``; unstructured fine-tuning keeps the zeroed weights at zero.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from typing import Any, Callable, cast

import numpy as np
import pandas as pd
import torch
from torch import nn

from keel.data.io import TableSource
from keel.data.schema import labelled_rows
from keel.data.split import split_rows
from keel.data.values import row_weights
from keel.errors import ConfigError, DataError, KeelWarning
from keel.model import Model
from keel.nn.losses import resolve_loss_name
from keel.nn.mlp import ResidualBlock
from keel.nn.network import NetworkBag, NetworkSpec, TabularNetwork
from keel.train.device import resolve_precision
from keel.train.trainer import Batch, Trainer


def selection_metric(task: str) -> tuple[str, bool]:
    """The metric pruning is judged by, and whether larger is better: ROC-AUC for binary targets
    (what keel's own early stopping watches there: on a table with 3% positives accuracy hardly
    moves while the positives' ranking falls apart), accuracy for multiclass, RMSE for regression."""
    return {"binary": ("roc_auc", True), "multiclass": ("accuracy", True)}.get(task, ("rmse", False))


# The amounts auto_prune tries first, then refines between the largest one within budget and the next.
AUTO_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95)
_BISECTION_STEPS = 3

# A weight tensor pruned in place and which of its entries stay (1) or are zero (0).
Masks = list[tuple[torch.Tensor, torch.Tensor]]


def prune(model: Model, amount: float, *, method: str = "structured", finetune: TableSource | None = None,
          finetune_epochs: int = 0) -> Model:
    """A pruned copy of ``model``; the model itself is left untouched.

    Args:
        model: A trained model.
        amount: The share to remove, strictly between 0 and 1: of each hidden layer's neurons
            (structured; rounded down per layer, and at least one neuron is kept) or of all linear
            weights (unstructured).
        method: A key of ``PRUNERS``: ``structured`` (smaller matrices, see the module docstring)
            or ``unstructured`` (zeros in matrices of the same shape).
        finetune: Labelled rows (a DataFrame or a path) to fine-tune the pruned network on; None for
            no fine-tuning.
        finetune_epochs: Epochs of fine-tuning (0: none). The model's training settings are used
            otherwise as they were, early stopping included, on ``training.validation_split`` of
            the rows held out at random.

    Returns:
        A new model with the pruned network; ``metrics`` is None (the stored test metrics were the
        unpruned model's) and a note says what was pruned.

    Raises:
        ConfigError: ``amount`` is not strictly between 0 and 1, ``method`` is unknown, or
            ``finetune_epochs`` is negative or set without rows.
        DataError: The fine-tuning rows lack a column or have no labelled row.
    """
    amount = check_amount(amount)
    pruner = pruner_for(method)
    if finetune_epochs < 0:
        raise ConfigError(f"finetune_epochs must be 0 or more; got {finetune_epochs}. Pass 0 to skip fine-tuning.")
    if finetune_epochs and finetune is None:
        raise ConfigError(f"finetune_epochs is {finetune_epochs} but no rows were given to fine-tune on; "
                          "pass finetune=<a labelled DataFrame> (--data on the command line) or finetune_epochs=0.")
    with torch.random.fork_rng(devices=[]):  # building networks draws initial weights; keep the caller's state
        network, masks, description = pruner(model.network, amount)
    note = f"pruned ({method}, amount {amount:g}): {description}"
    if finetune is not None and finetune_epochs:
        rows = _finetune(model, network, model.read_rows(finetune), finetune_epochs, masks)
        note += f"; fine-tuned {finetune_epochs} epoch(s) on {rows} rows"
    return Model(model.config, copy.deepcopy(model.schema), copy.deepcopy(model.preprocessor),
                 copy.deepcopy(model.target_encoder), network.eval(), history=copy.deepcopy(model.history),
                 metrics=None, notes=[*model.notes, note], calibration=copy.deepcopy(model.calibration),
                 run=copy.deepcopy(model.run), versions=dict(model.versions))


def check_amount(amount: Any) -> float:
    """``amount`` as a float if it lies strictly between 0 and 1.

    Raises:
        ConfigError: It does not (0 would prune nothing and 1 everything); the message names it.
    """
    try:
        value = float(amount)
    except (TypeError, ValueError):
        value = math.nan
    if isinstance(amount, bool) or not 0.0 < value < 1.0:
        raise ConfigError(f"the pruning amount must be a share strictly between 0 and 1; got {amount!r}. "
                          "Pass e.g. --prune 0.5 to remove half, or --prune auto to search within a metric budget.")
    return value


def auto_prune(model: Model, data: TableSource, *, max_drop: float = 0.005, method: str = "structured",
               finetune: TableSource | None = None, finetune_epochs: int = 0) -> tuple[Model, float, list[dict[str, Any]]]:
    """The largest pruning whose main metric on ``data`` stays within ``max_drop`` of the unpruned model's.

    The main metric is the one keel reports first: accuracy for classification, RMSE for
    regression. The budget is relative: accuracy may fall to ``(1 - max_drop)`` times the unpruned
    model's, RMSE may rise to ``(1 + max_drop)`` times it. Each amount of ``AUTO_GRID`` is tried
    (the metric is not monotone in the amount, so the search does not stop at the first failure);
    then the interval from the largest amount within budget to the next grid amount is bisected
    ``_BISECTION_STEPS`` times.

    Args:
        model: A trained model.
        data: Labelled rows to measure on (a DataFrame or a path).
        max_drop: The relative budget, 0 or more (0.005 is 0.5%).
        method: See :func:`prune`.
        finetune: Rows to fine-tune each candidate on (see :func:`prune`); measuring on the rows
            fine-tuned on flatters the candidates, so pass different rows from ``data``.
        finetune_epochs: See :func:`prune`.

    Returns:
        The chosen model, its amount, and every trial as a dict (``amount``, ``metric``,
        ``value``, ``drop``, ``within_budget``, ``parameters``; the first is the unpruned model,
        amount 0). When no amount stays within budget, ``model`` itself and 0.0.

    Raises:
        ConfigError: ``max_drop`` is negative or not a number, or ``method`` is unknown.
        DataError: ``data`` cannot be read, lacks the target or has no labelled row.
    """
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not max_drop >= 0:
        raise ConfigError(f"max_drop must be a relative share of 0 or more; got {max_drop!r}. "
                          "Pass e.g. --max-drop 0.005 to allow 0.5% below the unpruned model's metric.")
    pruner_for(method)
    frame = labelled_rows(model.read_rows(data), model.target, "to judge the pruning by (--prune auto compares metrics)")
    name, larger_is_better = selection_metric(model.task)
    baseline = _metric(model, frame, name)

    def trial(amount: float, candidate: Model) -> dict[str, Any]:
        value = _metric(candidate, frame, name)
        drop = (baseline - value if larger_is_better else value - baseline) / max(abs(baseline), 1e-12)
        return {"amount": amount, "metric": name, "value": value, "drop": drop, "within_budget": drop <= max_drop,
                "parameters": sum(p.numel() for p in candidate.network.parameters())}

    trials = [trial(0.0, model)]
    best: tuple[float, Model] = (0.0, model)

    def attempt(amount: float) -> bool:
        nonlocal best
        candidate = prune(model, amount, method=method, finetune=finetune, finetune_epochs=finetune_epochs)
        trials.append(trial(amount, candidate))
        if trials[-1]["within_budget"] and amount > best[0]:
            best = (amount, candidate)
        return bool(trials[-1]["within_budget"])

    for amount in AUTO_GRID:
        attempt(amount)
    above = [amount for amount in AUTO_GRID if amount > best[0]]
    if best[0] > 0 and above:  # above[0] failed: the largest passing amount lies between
        low, high = best[0], above[0]
        for _ in range(_BISECTION_STEPS):
            middle = round((low + high) / 2, 6)
            low, high = (middle, high) if attempt(middle) else (low, middle)
    return best[1], best[0], trials


def _metric(model: Model, frame: pd.DataFrame, name: str) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeelWarning)  # unseen categories: the same for every candidate
        value = model.evaluate(frame)[name]
    if value is None:  # ROC-AUC of rows holding one class only
        raise DataError(f"the rows to prune on hold one class of {model.target!r} only, so {name} is undefined; "
                        "pass rows with both classes.", file=frame.attrs.get("source"), column=model.target)
    return float(value)


# ---- structured ----------------------------------------------------------------------------------------


def _kept(width: int, amount: float) -> int:
    """Neurons kept of ``width``: the share ``amount`` removed, rounded down, and at least one kept."""
    return max(1, width - math.floor(amount * width + 1e-9))


def _norm_scale(norm: nn.Module, width: int) -> torch.Tensor:
    """How much a norm layer after a linear layer scales each neuron, (width,).

    Batch norm divides by the neuron's running spread and multiplies by its gamma; layer norm
    normalizes across neurons, so only its gamma tells neurons apart.
    """
    if isinstance(norm, nn.BatchNorm1d):
        scale = torch.ones(width) if norm.weight is None else norm.weight.detach().abs()
        running_var = norm.running_var if norm.running_var is not None else torch.ones(width)
        return scale / torch.sqrt(running_var + norm.eps)
    if isinstance(norm, nn.LayerNorm) and norm.weight is not None:
        return norm.weight.detach().abs()
    return torch.ones(width)


def _top(importance: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Indices of the ``n_keep`` largest importances, in their original order."""
    return torch.topk(importance, n_keep, sorted=False).indices.sort().values


def _slice_rows(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[keep].clone())
    if linear.bias is not None:
        linear.bias = nn.Parameter(linear.bias.detach()[keep].clone())
    linear.out_features = len(keep)


def _slice_columns(linear: nn.Linear, keep: torch.Tensor) -> None:
    linear.weight = nn.Parameter(linear.weight.detach()[:, keep].clone())
    linear.in_features = len(keep)


def _slice_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    """Keep the per-neuron state of a batch or layer norm for the ``keep`` neurons."""
    if isinstance(norm, nn.BatchNorm1d):
        norm.num_features = len(keep)
        for name in ("running_mean", "running_var"):
            buffer = getattr(norm, name)
            if buffer is not None:
                setattr(norm, name, buffer[keep].clone())
    elif isinstance(norm, nn.LayerNorm):
        norm.normalized_shape = (len(keep),)
    else:
        return
    for name in ("weight", "bias"):
        parameter = getattr(norm, name)
        if parameter is not None:
            setattr(norm, name, nn.Parameter(parameter.detach()[keep].clone()))


def _prune_plain(network: TabularNetwork, amount: float) -> list[int]:
    """Structured pruning of an MLP body (linear, norm, activation, dropout per layer), in place."""
    layers = list(network.mlp)
    positions = [index for index, layer in enumerate(layers) if isinstance(layer, nn.Linear)]
    hidden = positions[:len(network.spec.hidden)]  # the output layer (if any) comes after them
    widths = []
    for number, position in enumerate(hidden):
        incoming = layers[position]
        assert isinstance(incoming, nn.Linear)
        norm = layers[position + 1]
        width = incoming.out_features
        strength = incoming.weight.detach().norm(dim=1) * _norm_scale(norm, width)  # (width,)
        following = layers[positions[number + 1]] if number + 1 < len(positions) else None
        if isinstance(following, nn.Linear):
            outgoing = following.weight.detach().norm(dim=0)  # (width,)
        else:  # the ensemble heads, (k, width, n_outputs)
            outgoing = network.head_weight.detach().pow(2).sum(dim=(0, 2)).sqrt()
        keep = _top(strength * outgoing, _kept(width, amount))
        _slice_rows(incoming, keep)
        _slice_norm(norm, keep)
        if isinstance(following, nn.Linear):
            _slice_columns(following, keep)
        else:
            network.head_weight = nn.Parameter(network.head_weight.detach()[:, keep].clone())
        widths.append(len(keep))
    return widths


def _prune_residual(network: TabularNetwork, amount: float) -> list[int]:
    """Structured pruning of each residual block's inner width, in place (the skips fix the rest)."""
    widths = []
    for block in network.mlp:
        if not isinstance(block, ResidualBlock):
            continue
        first, second = block.main[1], block.main[4]
        assert isinstance(first, nn.Linear) and isinstance(second, nn.Linear)
        importance = first.weight.detach().norm(dim=1) * second.weight.detach().norm(dim=0)  # (inner,)
        keep = _top(importance, _kept(first.out_features, amount))
        _slice_rows(first, keep)
        _slice_columns(second, keep)
        widths.append(len(keep))
    return widths


def _rebuilt(network: TabularNetwork, spec: NetworkSpec) -> TabularNetwork:
    """A network built from ``spec`` holding ``network``'s weights: exactly what loading the saved model gives."""
    fresh = TabularNetwork(spec)
    fresh.load_state_dict(network.state_dict(), strict=True)
    return fresh


def _members(network: TabularNetwork | NetworkBag) -> list[TabularNetwork]:
    """The networks a model holds: its bagged networks, or the one."""
    if isinstance(network, NetworkBag):
        return [cast(TabularNetwork, member) for member in network.networks]
    return [network]


def _structured(network: TabularNetwork | NetworkBag, amount: float) -> tuple[TabularNetwork | NetworkBag, Masks, str]:
    members = _members(network)
    spec = members[0].spec
    if not spec.hidden:
        raise ConfigError("structured pruning removes hidden neurons, but this model has no hidden layer "
                          "(model.hidden is empty); use method='unstructured' (--prune-method unstructured).")
    pruned, widths = [], []
    for member in members:
        working = copy.deepcopy(member)
        if spec.architecture == "resnet":
            widths = _prune_residual(working, amount)
            new_spec = dataclasses.replace(spec, inner=widths)
        else:
            widths = _prune_plain(working, amount)
            new_spec = dataclasses.replace(spec, hidden=widths)
        pruned.append(_rebuilt(working, new_spec))
    before = spec.inner or spec.hidden
    what = "residual blocks' inner widths" if spec.architecture == "resnet" else "hidden widths"
    description = f"{what} {'-'.join(map(str, before))} -> {'-'.join(map(str, widths))}"
    if len(pruned) > 1:
        description += f" in each of {len(pruned)} bagged networks"
    result: TabularNetwork | NetworkBag = pruned[0] if len(pruned) == 1 else NetworkBag(pruned)
    return result, [], description


# ---- unstructured --------------------------------------------------------------------------------------


def _unstructured(network: TabularNetwork | NetworkBag, amount: float) -> tuple[TabularNetwork | NetworkBag, Masks, str]:
    """Zero the ``amount`` share of all linear weights (and ensemble heads) with the smallest magnitudes."""
    pruned = copy.deepcopy(network)
    members = _members(pruned)
    weights = [weight for member in members for weight in member.linear_weights()]
    magnitudes = torch.cat([weight.detach().abs().flatten() for weight in weights])
    n_zero = round(amount * magnitudes.numel())
    # A stable sort ranks ties by position, so exactly n_zero weights go whatever the ties.
    flat = torch.ones(magnitudes.numel())
    flat[torch.sort(magnitudes, stable=True).indices[:n_zero]] = 0.0
    masks: Masks = []
    start = 0
    with torch.no_grad():
        for weight in weights:
            mask = flat[start:start + weight.numel()].reshape(weight.shape).to(weight.dtype)
            start += weight.numel()
            weight.mul_(mask)
            masks.append((weight, mask))
    description = f"{n_zero} of {magnitudes.numel()} linear weights set to zero; shapes unchanged"
    return pruned, masks, description


# prune method -> (network, amount) -> (pruned copy, masks to keep during fine-tuning, description).
Pruner = Callable[[TabularNetwork | NetworkBag, float], tuple[TabularNetwork | NetworkBag, Masks, str]]
PRUNERS: dict[str, Pruner] = {"structured": _structured, "unstructured": _unstructured}


def pruner_for(method: str) -> Pruner:
    """The pruner registered as ``method``.

    Raises:
        ConfigError: ``method`` is not a key of ``PRUNERS``; the message lists them. (Not
            ``keel.registry.lookup``: this is an export option, not a config key to ``--set``.)
    """
    if method not in PRUNERS:
        raise ConfigError(f"the prune method must be one of {', '.join(PRUNERS)}; got {method!r}. "
                          "Pass --prune-method structured (method='structured' in Python).")
    return PRUNERS[method]


# ---- fine-tuning ---------------------------------------------------------------------------------------


def _finetune(model: Model, network: TabularNetwork | NetworkBag, frame: pd.DataFrame, epochs: int,
              masks: Masks) -> int:
    """Train ``network`` (in place, on the CPU) for ``epochs`` more epochs on ``frame``; returns the rows used.

    The model's own training settings, loss and class weighting. The zeros of ``masks`` stay
    exactly zero because their gradients are masked: every optimizer keel has leaves a weight that
    is zero with zero gradients at zero (Adam's moments stay 0, decoupled decay scales 0, an L2
    penalty's gradient at 0 is 0).
    """
    from keel.train.pipeline import class_weights_for, prior_correction

    batch = _rows(model, frame)
    task = model.task
    training = model.config.training
    # Fine-tuning's epochs are passes over the rows it is given, in float32, whatever the preset trained with.
    settings = training.model_copy(update={"epochs": epochs, "steps_per_epoch": "pass", "early_stopping_steps": None,
                                           "precision": resolve_precision(training.precision, torch.device("cpu"))})
    classes = batch.target.numpy() if task != "regression" else None
    split = split_rows(len(batch), validation=settings.validation_split, test=0.0, seed=settings.seed, classes=classes)
    train = batch.take(split.train)
    validation = batch.take(split.validation) if len(split.validation) else None
    class_weights = class_weights_for(settings.class_weights, train, model.target_encoder)
    loss = resolve_loss_name(settings.loss, task)
    handles = [weight.register_hook(lambda grad, mask=mask: grad * mask) for weight, mask in masks]
    try:
        for member in _members(network):
            # The fused step computes gradients without autograd, so its updates would miss the hooks.
            trainer = Trainer(member, settings, task, loss, class_weights, target_scale=model.target_encoder.std,
                              fused=False if masks else None)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(settings.seed)
                trainer.fit(train, validation)
            if class_weights is not None and settings.class_weights == "auto":
                member.shift_outputs(prior_correction(class_weights, task))  # as training does
            member.eval()
    finally:
        for handle in handles:
            handle.remove()
    return len(batch)


def _rows(model: Model, frame: pd.DataFrame) -> Batch:
    """The labelled rows of ``frame`` as a training batch for ``model``'s network."""
    target = model.target
    source = frame.attrs.get("source")
    frame = labelled_rows(frame, target, "to fine-tune on")
    features = model.preprocessor.transform(frame)
    y = model.target_encoder.encode(frame[target], source)
    column = model.config.training.weight_column
    weight = None
    if column is not None and column in frame.columns:
        weight = torch.from_numpy(row_weights(frame[column], column, source))
    return Batch(torch.from_numpy(features.numeric), torch.from_numpy(features.categorical),
                 torch.from_numpy(np.ascontiguousarray(y)), weight)
