"""After training, on the validation rows: a temperature for the probabilities, a threshold for binary labels.

**Temperature scaling** (Guo et al., 2017) divides every logit by one number T fitted to minimise
the validation rows' log loss. For one network it changes no ranking (ROC-AUC stays) and no
most-probable class, only how sure the probabilities are; an average of members (an ensemble, a
bag) divides each member by T before averaging, which can move the averaged ranking and, rarely, a
label. T is folded into the output layer's weights
(:meth:`keel.nn.network.TabularNetwork.scale_outputs`), so ``predict``, the ONNX and TFLite exports,
:mod:`keel.runtime` and the server all give the calibrated probabilities with no code of their own;
an ensemble's members, and a bag's networks, are each divided by T before they are averaged.

**The decision threshold** of a binary model: class 1 is predicted where its probability is at
least t (:func:`keel.evaluate.metrics.predicted_classes` is the rule everywhere). With
``training.threshold: auto`` t is chosen on the (calibrated) validation probabilities to maximise
F1 or balanced accuracy: on a table with 3% positives the most probable class is nearly always
"negative", and a threshold far below 0.5 finds the positives.

With bagging, each validation row is scored by the network that did not train on it (``folds``):
the other networks of the bag learned that row, and their confidence on it would pass for skill.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Literal, Sequence

import numpy as np
import torch
from torch import nn

from keel.config import TrainingConfig
from keel.nn.network import NetworkBag, TabularNetwork, combine_members
from keel.registry import lookup
from keel.train.threads import one_thread_if_small

Network = TabularNetwork | NetworkBag
ThresholdMetric = Literal["f1", "balanced_accuracy"]

#: At most this many validation rows (sampled, seeded) are used: enough to fit one number and pick
#: one threshold, and it keeps a 1M-row table's calibration to a second or two.
MAX_ROWS = 50_000
#: The temperatures searched: a grid over log T, then a golden-section search around its best point.
LOG_TEMPERATURE_RANGE = (math.log(0.05), math.log(20.0))
GRID_POINTS = 17
LOG_TOLERANCE = 1e-4
#: A temperature is kept when it lowers the validation log loss by more than this share of it...
RELATIVE_GAIN = 1e-4
#: ...and by more than chance would: the likelihood-ratio statistic, 2 x rows x the drop in mean
#: log loss, above the 95% point of chi-squared with one degree of freedom. On validation sets of
#: tens of rows the fitted T is mostly noise: on penguins, breast cancer, wine and digits (fast
#: preset, two seeds each) temperatures kept without this test made the test log loss worse in 6
#: of 10 runs; with it, only the one whose test log loss fell by a third (0.30 to 0.20) was kept.
SIGNIFICANCE = 3.84
#: The standard deviation of a normal prior on log T (the fitted T is its posterior mode). On a
#: small validation set that the network happens to separate perfectly, the plain log-loss minimum
#: runs to the smallest T searched (probabilities of 1e-9 on the test rows); the prior weighs as one
#: row's worth of evidence over the whole set, so on thousands of rows T moves by under a percent.
PRIOR_SD = 0.5
_BATCH_ROWS = 4096


def fit_temperature(network: Network, numeric: torch.Tensor, categorical: torch.Tensor, target: torch.Tensor,
                    weight: torch.Tensor | None, task: str, *, folds: Sequence[np.ndarray] | None = None,
                    seed: int = 0, max_rows: int = MAX_ROWS) -> dict[str, Any]:
    """Fit a temperature on validation rows and fold it into ``network`` when it lowers their log loss.

    The network is changed in place (``network.scale_outputs(1 / T)``) only when the temperature
    is kept; otherwise it is left untouched and the fitted value is still reported.

    Args:
        network: The trained classifier, in eval mode on any device.
        numeric: The validation rows' numbers, (n, numeric_width).
        categorical: Their category codes, (n, n_categories).
        target: Their class indices, (n,).
        weight: Their row weights, (n,), or None.
        task: ``"binary"`` or ``"multiclass"``.
        folds: For a :class:`NetworkBag` validated on folds: the row positions (into these rows)
            each network held out, in the bag's order. Each row is then scored by that network
            alone. None scores every row with the whole network.
        seed: Seeds the sample of rows when there are more than ``max_rows``.
        max_rows: The most rows used.

    Returns:
        ``{"temperature", "kept", "log_loss_before", "log_loss_after", "rows"}``: the fitted T,
        whether it was applied (it lowers the log loss by more than ``RELATIVE_GAIN`` of it and by
        more than chance, see ``SIGNIFICANCE``), the validation log loss at T = 1 and at the fitted
        T (whether kept or not), and the rows used. With no usable rows (none, or all of one class)
        the temperature is 1.0, not kept, and both losses are None.

    Raises:
        ValueError: ``task`` is regression, or ``folds`` does not match the network.
    """
    sample = validation_sample(len(target), max_rows, seed)
    outputs = member_outputs(network, numeric[sample], categorical[sample], _subset_folds(folds, sample, len(target)))
    y, w = target[sample].cpu(), None if weight is None else weight[sample].cpu()
    result = search_temperature(outputs, y, w, task)
    if result["kept"]:
        network.scale_outputs(1.0 / result["temperature"])
    return result


def search_temperature(outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None,
                       task: str) -> dict[str, Any]:
    """The temperature that minimises the log loss of members' ``outputs`` (posterior mode, see ``PRIOR_SD``).

    Args:
        outputs: Every member's logits, (n, members, n_outputs), as :func:`member_outputs` gives them.
        target: Class indices, (n,).
        weight: Row weights, (n,), or None.
        task: ``"binary"`` or ``"multiclass"``.

    Returns:
        As :func:`fit_temperature` (nothing is applied here).

    Raises:
        ValueError: ``task`` is regression.
    """
    if task not in ("binary", "multiclass"):
        raise ValueError(f"a temperature calibrates class probabilities; task {task!r} has none.")
    y = target.to(torch.int64)
    w = torch.ones(len(y), dtype=torch.float64) if weight is None else weight.to(torch.float64)
    usable = len(y) > 0 and float(w.sum()) > 0 and len(torch.unique(y[w > 0])) > 1
    if not usable:  # nothing to fit, or a one-class set, on which the loss falls forever with T
        return {"temperature": 1.0, "kept": False, "log_loss_before": None, "log_loss_after": None, "rows": len(y)}
    outputs = outputs.to(torch.float64)
    # NumPy's pairwise sums: torch splits a sum over 32,768 values across threads, and 1 and 2 threads then gave
    # log losses that differed in their last bits (the audit's), where the count now follows the machine's load.
    w = w / float(np.sum(w.numpy()))
    effective_rows = 1.0 / float(np.sum((w * w).numpy()))  # Kish: n for equal weights

    log_loss = _log_loss_of(outputs, y, w, task)

    def loss(log_t: float) -> float:
        return log_loss(math.exp(log_t))

    def objective(log_t: float) -> float:
        return loss(log_t) + log_t**2 / (2 * PRIOR_SD**2 * effective_rows)

    with one_thread_if_small(outputs.numel()):  # some 40 losses, each a few element-wise passes
        log_t = _minimise(objective)
        before, after = loss(0.0), loss(log_t)
    kept = before - after > RELATIVE_GAIN * before and 2 * effective_rows * (before - after) > SIGNIFICANCE
    return {"temperature": math.exp(log_t), "kept": kept, "log_loss_before": before, "log_loss_after": after,
            "rows": len(y)}


def choose_threshold(probabilities: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                     metric: ThresholdMetric = "f1") -> tuple[float, float]:
    """The decision threshold on the positive class's probability that scores best on these rows.

    Every distinct probability is a cut: the candidates are the midpoints between neighbouring
    distinct probabilities (and beyond the lowest and highest), so the rule ``p >= threshold``
    keeps a margin from each row on either side. Counts are cumulative sums over the sorted rows,
    so this is one sort, not a loop over thresholds. Of candidates that score the same, the one
    nearest 0.5 wins.

    Args:
        probabilities: The positive class's probability per row, (n,).
        target: 1 for a positive row, 0 for a negative one, (n,).
        weight: Row weights, (n,), or None.
        metric: ``"f1"`` (of the positive class) or ``"balanced_accuracy"``.

    Returns:
        ``(threshold, score)``: a threshold strictly inside (0, 1) and the metric there. Rows of one
        class only (or none) give ``(0.5, nan)``: there is nothing to choose by.

    Raises:
        ConfigError: ``metric`` is not one of the two.
    """
    score = lookup(THRESHOLD_METRICS, "training.threshold_metric", metric)
    p = np.asarray(probabilities, dtype=np.float64)
    positive = np.asarray(target) == 1
    w = np.ones(len(p)) if weight is None else np.asarray(weight, dtype=np.float64)
    total_positive, total_negative = float(w[positive].sum()), float(w[~positive].sum())
    if total_positive <= 0 or total_negative <= 0:
        return 0.5, float("nan")
    order = np.argsort(-p, kind="stable")
    p, w_positive, w_negative = p[order], np.where(positive, w, 0.0)[order], np.where(positive, 0.0, w)[order]
    last = np.r_[p[1:] != p[:-1], True]  # the last row of each run of equal probabilities
    values = p[last]  # distinct, descending
    # Candidate j predicts positive the rows above the j-th distinct value: j = 0 none, j = m all.
    true_positive = np.r_[0.0, np.cumsum(w_positive)[last]]
    false_positive = np.r_[0.0, np.cumsum(w_negative)[last]]
    thresholds = (np.r_[1.0, values] + np.r_[values, 0.0]) / 2
    scores = score(true_positive, false_positive, total_positive, total_negative)
    best = scores.max()
    tied = np.flatnonzero(scores >= best - 1e-12)  # sums of weights round differently in different orders
    choice = tied[np.argmin(np.abs(thresholds[tied] - 0.5))]
    threshold = float(np.clip(thresholds[choice], _EDGE, 1 - _EDGE))
    return threshold, float(scores[choice])


def _f1(true_positive: np.ndarray, false_positive: np.ndarray, positive: float, negative: float) -> np.ndarray:
    denominator = true_positive + false_positive + positive  # 2TP + FP + FN
    return np.divide(2 * true_positive, denominator, out=np.zeros_like(denominator), where=denominator > 0)


def _balanced_accuracy(true_positive: np.ndarray, false_positive: np.ndarray, positive: float,
                       negative: float) -> np.ndarray:
    return (true_positive / positive + 1 - false_positive / negative) / 2


# training.threshold_metric: each candidate threshold's score from its cumulative weighted counts.
THRESHOLD_METRICS: dict[str, Callable[[np.ndarray, np.ndarray, float, float], np.ndarray]] = {
    "f1": _f1, "balanced_accuracy": _balanced_accuracy,
}

_EDGE = 1e-6  # the threshold stays this far inside (0, 1): float32 probabilities still straddle it
# What calibrate records when it fits no temperature (training.calibrate is off).
_NOT_FITTED: dict[str, Any] = {"temperature": None, "kept": False, "log_loss_before": None, "log_loss_after": None}


def calibrate(network: Network, numeric: torch.Tensor, categorical: torch.Tensor, target: torch.Tensor,
              weight: torch.Tensor | None, task: str, training: TrainingConfig, *,
              folds: Sequence[np.ndarray] | None = None) -> dict[str, Any] | None:
    """Temperature (``training.calibrate``) and decision threshold (``training.threshold``) in one pass.

    Every validation row goes through the network once; the temperature is fitted and, when kept,
    folded into ``network``; the threshold (``auto``) is then chosen on the calibrated probabilities.

    Args:
        network: The trained network (after any prior correction), in eval mode.
        numeric, categorical, target, weight: The validation rows, as for :func:`fit_temperature`
            (with bagging, every network's validation fold, concatenated).
        task: The model's task.
        training: The training settings: ``calibrate``, ``threshold``, ``threshold_metric``, ``seed``.
        folds: As for :func:`fit_temperature`.

    Returns:
        None for regression, and when there is nothing to record (``calibrate`` off and the threshold
        at its default 0.5). Else the model's ``calibration``: ``temperature`` (None when not fitted),
        ``kept``, ``log_loss_before``, ``log_loss_after``, ``rows`` as :func:`fit_temperature` gives
        them, and ``threshold`` (None: the most probable class wins), ``threshold_auto``,
        ``threshold_metric`` and ``threshold_score`` (the metric at the threshold on the validation
        rows; None when not chosen there).

    Raises:
        ValueError: ``folds`` does not match the network.
    """
    if task == "regression":
        return None
    auto = task == "binary" and training.threshold == "auto"
    fixed = training.threshold if task == "binary" and not auto and training.threshold != 0.5 else None
    if not training.calibrate and not auto:
        return None if fixed is None else {**_NOT_FITTED, "rows": 0, "threshold": float(fixed), "threshold_auto": False,
                                           "threshold_metric": None, "threshold_score": None}
    sample = validation_sample(len(target), MAX_ROWS, training.seed)
    outputs = member_outputs(network, numeric[sample], categorical[sample], _subset_folds(folds, sample, len(target)))
    y, w = target[sample].cpu(), None if weight is None else weight[sample].cpu()
    record: dict[str, Any] = {**_NOT_FITTED, "rows": len(y)}
    if training.calibrate:
        record.update(search_temperature(outputs, y, w, task))
        if record["kept"]:
            network.scale_outputs(1.0 / record["temperature"])
    record.update(threshold=None if fixed is None else float(fixed), threshold_auto=auto,
                  threshold_metric=training.threshold_metric if auto else None, threshold_score=None)
    if auto and len(y):
        temperature = record["temperature"] if record["kept"] else 1.0
        logits = combine_members(outputs.to(torch.float64) / temperature, task)[:, 0]
        probability, labels = torch.sigmoid(logits).numpy(), y.numpy()
        weights = None if w is None else w.numpy()
        # F1 is the rarer class's (for rare positives): where that is the first class ('F' before 'ok'), the
        # second's F1 is near 1 at any cut, and maximising it predicted the rare class less (a user's trial).
        scored = rarer_class(labels, weights) if training.threshold_metric == "f1" else 1
        if scored == 1:
            threshold, score = choose_threshold(probability, labels, weights, training.threshold_metric)
        else:  # the first class's F1 on its own probability, as a cut on the second's: it wins where p >= 1 - cut
            cut, score = choose_threshold(1 - probability, 1 - labels, weights, training.threshold_metric)
            threshold = 1.0 - cut
        if not math.isnan(score):
            record.update(threshold=threshold, threshold_score=score, threshold_class=scored)
    return record


# The first class's F1 is the one maximised where it holds less than this share of the validation rows' weight: a
# clearly rare class. Near an even split the two classes' best cuts lie on opposite sides (each one's F1 gains from
# predicting it more), and one row would turn the threshold around (the audit); there the second's, as always.
RARE_SHARE = 1 / 3


def rarer_class(labels: np.ndarray, weights: np.ndarray | None = None) -> int:
    """0 where the first class is clearly the rarer on these rows (under ``RARE_SHARE`` of their weight; binary
    labels 0 / 1), else 1: the class whose F1 ``threshold_metric: f1`` maximises."""
    w = np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64)
    positive = np.asarray(labels) == 1
    total = float(w.sum())
    return 0 if total > 0 and float(w[~positive].sum()) < RARE_SHARE * total else 1


def calibration_notes(record: dict[str, Any] | None, labels: Sequence[Any] = (0, 1)) -> list[str]:
    """What :func:`calibrate` did, as notes for the run (``model.notes``); empty when it did nothing.

    Args:
        record: :func:`calibrate`'s result.
        labels: The class labels (binary: the two, in order), to name the class whose F1 was maximised.

    Returns:
        Zero to two one-line notes.
    """
    if record is None:
        return []
    notes = []
    if record["temperature"] is not None:
        if record["log_loss_before"] is None:
            why = "there are no validation rows" if not record["rows"] else "the validation rows hold one class only"
            notes.append(f"no temperature fitted: {why}")
        else:
            verdict = ("kept" if record["kept"] else "not kept: a drop this small is within chance on this many rows"
                       if record["log_loss_after"] < record["log_loss_before"] else "not kept")
            notes.append(f"temperature {record['temperature']:.3g} fitted on {record['rows']} validation rows "
                         f"(log loss {record['log_loss_before']:.4g} at 1, {record['log_loss_after']:.4g} with it); "
                         f"{verdict}")
    if record["threshold_auto"]:
        metric = str(record["threshold_metric"]).replace("_", " ")
        if record["threshold"] is None:
            notes.append("training.threshold is auto but the validation rows do not hold both classes (or there are "
                         "none): the more probable class is predicted, as with 0.5. Set training.validation_split "
                         "higher to choose a threshold.")
        else:
            if record.get("threshold_class") is not None and record["threshold_metric"] == "f1":
                metric = f"f1 of {labels[record['threshold_class']]!r}, the rarer class,"
            notes.append(f"decision threshold {record['threshold']:.4g} on the probability of {labels[-1]!r} chosen on "
                         f"{record['rows']} validation rows ({metric} {record['threshold_score']:.4g} there)")
    return notes


def validation_sample(n_rows: int, max_rows: int, seed: int) -> np.ndarray:
    """Row positions to use: all ``n_rows``, or ``max_rows`` of them drawn without replacement, sorted."""
    if n_rows <= max_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).choice(n_rows, max_rows, replace=False))


@torch.no_grad()
def member_outputs(network: Network, numeric: torch.Tensor, categorical: torch.Tensor,
                   folds: Sequence[np.ndarray] | None = None) -> torch.Tensor:
    """Every member's raw outputs for these rows, (n, members, n_outputs) float64 on the CPU.

    Args:
        network: A network or a bag, in eval mode.
        numeric, categorical: The rows.
        folds: For a bag, the rows each network scores alone (see :func:`fit_temperature`);
            together they must cover every row.

    Raises:
        ValueError: ``folds`` is given for a single network, or does not hold one array per network.
    """
    if folds is None:
        return _members(network, numeric, categorical)
    if not isinstance(network, NetworkBag) or len(folds) != len(network.networks):
        count = len(network.networks) if isinstance(network, NetworkBag) else 1
        raise ValueError(f"folds needs one array of rows per network of a bag; got {len(folds)} for {count} "
                         "network(s).")
    k, n_outputs = network.spec.ensemble, network.spec.n_outputs
    outputs = torch.full((len(numeric), k, n_outputs), float("nan"), dtype=torch.float64)
    networks: list[TabularNetwork] = list(network.networks)  # type: ignore[arg-type]  # ModuleList types as Module
    for member, rows in zip(networks, folds):
        index = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        outputs[index] = _members(member, numeric[index.to(numeric.device)], categorical[index.to(numeric.device)])
    if torch.isnan(outputs).any():
        raise ValueError("folds must cover every validation row; some rows are in no fold.")
    return outputs


def _members(network: Network, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
    device = next(network.parameters()).device
    was_training = network.training
    network.eval()
    with torch.inference_mode():
        parts = [network.members(numeric[start:start + _BATCH_ROWS].to(device),
                                 categorical[start:start + _BATCH_ROWS].to(device)).to("cpu", torch.float64)
                 for start in range(0, len(numeric), _BATCH_ROWS)]
    network.train(was_training)
    if parts:
        return torch.cat(parts)
    spec = network.spec
    width = spec.ensemble * (len(network.networks) if isinstance(network, NetworkBag) else 1)
    return torch.zeros((0, width, spec.n_outputs), dtype=torch.float64)


def _subset_folds(folds: Sequence[np.ndarray] | None, sample: np.ndarray, n_rows: int) -> list[np.ndarray] | None:
    """``folds`` (positions among all rows) as positions among the sampled rows."""
    if folds is None:
        return None
    if len(sample) == n_rows:
        return [np.asarray(rows, dtype=np.int64) for rows in folds]
    where = np.full(n_rows, -1, dtype=np.int64)
    where[sample] = np.arange(len(sample))
    return [kept[kept >= 0] for kept in (where[np.asarray(rows, dtype=np.int64)] for rows in folds)]


def _log_loss_of(outputs: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 task: str) -> Callable[[float], float]:
    """The weighted mean log loss (weights summing to 1) of the members' combined prediction, as a
    function of the temperature every member's logits are divided by."""
    if task == "binary":
        def binary(temperature: float) -> float:
            logits = combine_members(outputs / temperature, task)[:, 0]
            # -log sigmoid(z) for a positive, -log sigmoid(-z) for a negative: softplus of the other sign.
            # Summed in NumPy: torch splits sums over 32,768+ values across threads, and the figure
            # would differ in its last bits between thread counts.
            return float(np.sum((nn.functional.softplus(torch.where(target == 1, -logits, logits)) * weight).numpy()))
        return binary
    # Only the true class's probability enters the loss: per member, its log-softmax, then the log
    # of the members' mean (combine_members' rule). Logits less each member's largest are <= 0, so
    # exp(x / T) neither overflows nor sums below 1, and a plain exp-sum-log (3x faster than
    # logsumexp on 50,000 x 8 x 10) is exact enough.
    k = outputs.shape[1]
    shifted = outputs - outputs.amax(dim=2, keepdim=True)  # (n, k, n_classes)
    true_shifted = shifted.gather(2, target[:, None, None].expand(-1, k, 1))[:, :, 0]  # (n, k)

    def multiclass(temperature: float) -> float:
        log_p = true_shifted / temperature - (shifted / temperature).exp().sum(dim=2).log()  # (n, k)
        return float(-np.sum(((torch.logsumexp(log_p, dim=1) - math.log(k)) * weight).numpy()))
    return multiclass


def _minimise(objective: Callable[[float], float]) -> float:
    """The minimiser of ``objective`` over log T: the best of a grid, refined by golden-section search."""
    low, high = LOG_TEMPERATURE_RANGE
    grid = np.linspace(low, high, GRID_POINTS)
    values = [objective(float(x)) for x in grid]
    best = int(np.argmin(values))
    a, b = float(grid[max(best - 1, 0)]), float(grid[min(best + 1, GRID_POINTS - 1)])
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    f_c, f_d = objective(c), objective(d)
    while b - a > LOG_TOLERANCE:
        if f_c < f_d:
            b, d, f_d = d, c, f_c
            c = b - ratio * (b - a)
            f_c = objective(c)
        else:
            a, c, f_c = c, d, f_d
            d = a + ratio * (b - a)
            f_d = objective(d)
    refined = (a + b) / 2
    return refined if objective(refined) <= values[best] else float(grid[best])
