"""A fused training step for plain MLPs: forward, backward and optimizer in a few ATen calls.

On small tables a training step is bound by per-operation overhead, not arithmetic: eager
PyTorch with autograd and ``optimizer.step()`` costs ~350-450 µs a step on a 64-32 MLP here,
most of it bookkeeping. This step writes the backward pass by hand (the network is a stack of
affine maps and element-wise activations, so each layer's gradient is two matmuls and one
activation-backward kernel) and calls PyTorch's fused optimizer kernels directly, which brings
the same step to ~75 µs. It computes the same gradients as autograd (the tests check this to
float rounding) and serves every network keel builds except those with batch or layer norm,
which train on the autograd path.
"""

from __future__ import annotations

import math
from typing import Callable, Literal, cast

import torch
from torch import nn

from keel.config import TrainingConfig
from keel.nn.dropout import LANE, draws_for, keep_threshold, lane_mask
from keel.nn.network import TabularNetwork

_aten = torch.ops.aten

# What a step checks before it updates the weights (see FusedStep.step).
StepCheck = Literal["all", "loss", "none"]

# Activation forward, and its backward from (grad, pre-activation z, activation output a).
_ACTIVATIONS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor],
                              Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]]] = {
    "relu": (torch.relu, lambda g, z, a: _aten.threshold_backward(g, a, 0)),
    "leaky_relu": (lambda z: nn.functional.leaky_relu(z, 0.01),
                   lambda g, z, a: _aten.leaky_relu_backward(g, z, 0.01, False)),
    "tanh": (torch.tanh, lambda g, z, a: _aten.tanh_backward(g, a)),
    "sigmoid": (torch.sigmoid, lambda g, z, a: _aten.sigmoid_backward(g, a)),
    "gelu": (nn.functional.gelu, lambda g, z, a: _aten.gelu_backward(g, z)),
    "silu": (nn.functional.silu, lambda g, z, a: _aten.silu_backward(g, z)),
}


# Activations whose forward and backward can write into reused buffers: each step then allocates
# almost nothing, which matters because glibc hands megabyte-sized tensors back to the kernel and
# re-faults them on the next step (on W3's 1024 x 256 activations that was ~25% of a step).
_FORWARD_INTO: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda z, out: torch.clamp_min(z, 0, out=out),
    "tanh": lambda z, out: torch.tanh(z, out=out),
    "sigmoid": lambda z, out: torch.sigmoid(z, out=out),
}
_BACKWARD_INTO: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "relu": lambda g, a, out: _aten.threshold_backward.grad_input(g, a, 0, grad_input=out),
    "tanh": lambda g, a, out: _aten.tanh_backward.grad_input(g, a, grad_input=out),
    "sigmoid": lambda g, a, out: _aten.sigmoid_backward.grad_input(g, a, grad_input=out),
}


def fused_step_supported(network: TabularNetwork, settings: TrainingConfig | None = None) -> bool:
    """True when the fused step can train the network: a plain MLP on the CPU (where per-step
    overhead is what it removes) without batch or layer norm, trained without label smoothing."""
    smoothing = settings is not None and settings.label_smoothing > 0
    on_cpu = all(parameter.device.type == "cpu" for parameter in network.parameters())
    return (on_cpu and network.spec.plain and not smoothing and network.spec.norm == "none"
            and network.spec.activation in _ACTIVATIONS
            and hasattr(torch, "_fused_adam_") and hasattr(torch, "_fused_sgd_"))


def _table_slices(tables: list[torch.Tensor], numeric_width: int) -> list[tuple[int, int, int]]:
    """(category column, first input column, width) of each trainable table, in trainable order.

    Frozen one-hot tables can sit between trainable ones, so a trainable table's position in the
    trainable list is neither its category column nor where its vector starts in the first layer's
    input: both are counted over every table.
    """
    slices = []
    start = numeric_width
    for column, table in enumerate(tables):
        width = int(table.shape[1])
        if table.requires_grad:
            slices.append((column, start, width))
        start += width
    return slices


class FusedStep:
    """Trains ``network`` in place one batch at a time, without autograd.

    Args:
        network: A TabularNetwork with ``norm == "none"``.
        settings: The training section (optimizer, penalties, clipping).
        loss: ``cross_entropy``, ``bce``, ``mse``, ``mae`` or ``huber``.
        class_weights: Per-class weights for cross_entropy / bce, or None.
    """

    def __init__(self, network: TabularNetwork, settings: TrainingConfig, loss: str,
                 class_weights: torch.Tensor | None = None) -> None:
        spec = network.spec
        linears = [module for module in network.mlp if isinstance(module, nn.Linear)]
        self.weights = [linear.weight for linear in linears]
        self.biases = [linear.bias for linear in linears]
        self.activation, self.activation_backward = _ACTIVATIONS[spec.activation]
        self.forward_into = _FORWARD_INTO.get(spec.activation)
        self.backward_into = _BACKWARD_INTO.get(spec.activation)
        self.widths = list(spec.hidden)
        self._buffers: dict[int, list[dict[str, torch.Tensor]]] = {}
        # Dropout keeps a unit when a 15-bit uniform draw falls under ``threshold`` (see _dropout_mask):
        # the kept share is threshold / 2^15, within 2^-16 of 1 - dropout, and kept units are scaled by
        # its inverse, so the expected activation is exactly the undropped one.
        self.threshold = keep_threshold(spec.dropout)
        self.keep = self.threshold / LANE
        embeddings = [cast(nn.Embedding, table) for table in network.categories.tables]
        self.all_tables: list[torch.Tensor] = [table.weight for table in embeddings]
        self.tables = [weight for weight in self.all_tables if weight.requires_grad]  # one-hot tables are frozen
        self.table_slices = _table_slices(self.all_tables, spec.numeric_width)
        self.loss_name = loss
        self.class_weights = class_weights
        self.settings = settings
        self.dtype = torch.bfloat16 if settings.precision == "bfloat16" else torch.float32
        self.parameters = [p for pair in zip(self.weights, self.biases) for p in pair] + self.tables
        # Every gradient is a view of one flat buffer, so that one sum over it tells whether any is
        # NaN or infinite (see gradients_finite): one reduction a step, not one per tensor.
        sizes = [p.numel() for p in self.parameters]
        self.flat_grad = torch.zeros(sum(sizes), dtype=torch.float32)
        self.grads = [chunk.view_as(p) for chunk, p in zip(self.flat_grad.split(sizes), self.parameters)]
        self.weight_grads = self.grads[0:2 * len(linears):2]
        self.bias_grads = self.grads[1:2 * len(linears):2]
        self.table_grads = self.grads[2 * len(linears):]
        self._optimizer_state()
        self.eye = torch.eye(max(spec.n_outputs, 2))

    def _optimizer_state(self) -> None:
        settings = self.settings
        self.step_count = torch.zeros(())
        if settings.optimizer == "sgd":
            self.momentum = [torch.zeros_like(p) for p in self.parameters] if settings.momentum else []
        else:
            self.exp_avg = [torch.zeros_like(p) for p in self.parameters]
            self.exp_avg_sq = [torch.zeros_like(p) for p in self.parameters]
        self.first = True

    def __call__(self, numeric: torch.Tensor, categorical: torch.Tensor, target: torch.Tensor, lr: float) -> torch.Tensor:
        """One step on a batch, unchecked; returns the batch's mean loss (a 0-d tensor, no host sync)."""
        return self.step(numeric, categorical, target, lr, check="none")[0]

    @torch.no_grad()
    def step(self, numeric: torch.Tensor, categorical: torch.Tensor, target: torch.Tensor, lr: float,
             check: StepCheck = "all") -> tuple[torch.Tensor, bool]:
        """One step on a batch: gradients, then the optimizer at rate ``lr``.

        Args:
            numeric: (batch, numeric_width) float32 inputs.
            categorical: (batch, n_categorical) int64 codes.
            target: (batch,) class indices or standardized values.
            lr: The learning rate of this step.
            check: What must be finite for the weights to be updated: ``all`` (the loss and every
                gradient: ~2.5 µs), ``loss`` (one host read, ~0.6 µs; a finite loss whose gradient
                is not shows in the next step's loss) or ``none``.

        Returns:
            The batch's mean loss (0-d), and whether the weights were updated.
        """
        # One no_grad entry a step, not one for the gradients and one for the update: each costs ~2.4 µs.
        loss = self._gradients(numeric, categorical, target)
        if check != "none" and not (math.isfinite(loss.item()) and (check == "loss" or self.gradients_finite())):
            return loss, False
        self._optimize(lr)
        return loss, True

    def gradients_finite(self) -> bool:
        """True when every gradient of the last step is finite.

        The sum of the flat buffer is NaN or infinite when any element is (IEEE arithmetic keeps
        both; it overflows from finite gradients only past ~1e34, which is overflow all the same).
        """
        return math.isfinite(self.flat_grad.sum().item())

    @torch.no_grad()
    def gradients(self, numeric: torch.Tensor, categorical: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Fill ``self.grads`` (in ``self.parameters`` order) for a batch; returns its mean loss."""
        return self._gradients(numeric, categorical, target)

    def _gradients(self, numeric: torch.Tensor, categorical: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        low = self.dtype != torch.float32
        # bfloat16: matmuls and activations in bf16 (AMX units), master weights, gradients and
        # optimizer state in float32.
        weights = [w.to(self.dtype) for w in self.weights] if low else self.weights
        biases = [b.to(self.dtype) for b in self.biases] if low else self.biases
        inputs = self._inputs(numeric, categorical).to(self.dtype)
        saved = []
        hidden = inputs
        buffers = self._layer_buffers(len(inputs))
        for weight, bias, buffer in zip(weights[:-1], biases[:-1], buffers):
            pre = torch.addmm(bias, hidden, weight.t(), out=buffer["pre"])  # (batch, width)
            out = self.forward_into(pre, buffer["out"]) if self.forward_into else self.activation(pre)
            mask = None
            if self.keep < 1.0:
                mask = self._dropout_mask(buffer)
                out_dropped = out * mask
            else:
                out_dropped = out
            saved.append((hidden, pre, out, mask))
            hidden = out_dropped
        outputs = torch.addmm(biases[-1], hidden, weights[-1].t()).float()  # (batch, n_outputs)
        loss, grad = self._loss(outputs, target)
        self._backward(grad.to(self.dtype), hidden, saved, categorical, weights, buffers)
        self._penalize_and_clip()
        return loss

    def _layer_buffers(self, n_rows: int) -> list[dict[str, torch.Tensor]]:
        """Per hidden layer (batch, width) buffers for this batch size, made once and reused (with
        dropout, also the mask and its random draws: four 16-bit lanes per 64-bit word)."""
        if n_rows not in self._buffers:
            names = ("pre", "out", "grad", "act_grad") + (("mask",) if self.keep < 1.0 else ())
            self._buffers[n_rows] = [
                {name: torch.empty(n_rows, width, dtype=self.dtype) for name in names}
                | ({"draws": torch.empty(draws_for(n_rows * width), dtype=torch.int64)} if self.keep < 1.0 else {})
                for width in self.widths
            ]
        return self._buffers[n_rows]

    def _dropout_mask(self, buffer: dict[str, torch.Tensor]) -> torch.Tensor:
        """A dropout mask (0, or 1 / keep) in ``buffer["mask"]``, four lanes to a random draw
        (keel.nn.dropout: 1.2 ms against bernoulli_'s 1.9 ms for a 1,024 x 256 layer)."""
        return lane_mask(buffer["draws"], buffer["mask"], self.threshold)

    def _inputs(self, numeric: torch.Tensor, categorical: torch.Tensor) -> torch.Tensor:
        if not self.all_tables:
            return numeric
        parts = [numeric] + [table[categorical[:, index]] for index, table in enumerate(self.all_tables)]
        return torch.cat(parts, dim=1)

    def _loss(self, outputs: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's mean loss and its gradient with respect to the outputs."""
        n = outputs.shape[0]
        name = self.loss_name
        if name == "cross_entropy":
            log_p = torch.log_softmax(outputs, dim=1)
            onehot = self.eye[target]
            if self.class_weights is None:
                loss = -(log_p * onehot).sum() / n
                return loss, log_p.exp_().sub_(onehot).div_(n)
            row = self.class_weights[target]
            total = row.sum()
            loss = -((log_p * onehot).sum(1) * row).sum() / total
            return loss, log_p.exp_().sub_(onehot).mul_((row / total)[:, None])
        if name == "bce":
            logits, y = outputs[:, 0], target.to(outputs.dtype)
            positive = 1.0 if self.class_weights is None else float(self.class_weights[1] / self.class_weights[0])
            # -[w*y*log s(z) + (1-y)*log(1-s(z))] with log s(z) = -softplus(-z), log(1-s(z)) = -softplus(z)
            loss = (positive * y * nn.functional.softplus(-logits) + (1 - y) * nn.functional.softplus(logits)).mean()
            sig = torch.sigmoid(logits)
            grad = ((1 - y) * sig - positive * y * (1 - sig)).div_(n)
            return loss, grad[:, None]
        error = outputs[:, 0] - target
        if name == "mse":
            return error.pow(2).mean(), (2.0 / n * error)[:, None]
        if name == "mae":
            return error.abs().mean(), (torch.sign(error) / n)[:, None]
        absolute = error.abs()  # huber, delta 1
        loss = torch.where(absolute < 1, 0.5 * error.pow(2), absolute - 0.5).mean()
        return loss, (error.clamp(-1, 1) / n)[:, None]

    def _backward(self, grad: torch.Tensor, last_hidden: torch.Tensor, saved: list, categorical: torch.Tensor,
                  weights: list[torch.Tensor], buffers: list[dict[str, torch.Tensor]]) -> None:
        self._weight_grad(self.weight_grads[-1], self.bias_grads[-1], grad, last_hidden)
        for index in range(len(saved) - 1, -1, -1):
            layer_input, pre, out, mask = saved[index]
            grad = torch.mm(grad, weights[index + 1], out=buffers[index]["grad"])  # (batch, width)
            if mask is not None:
                grad = grad.mul_(mask)
            if self.backward_into:
                grad = self.backward_into(grad, out, buffers[index]["act_grad"])
            else:
                grad = self.activation_backward(grad, pre, out)
            self._weight_grad(self.weight_grads[index], self.bias_grads[index], grad, layer_input)
        if self.tables:
            input_grad = torch.mm(grad, weights[0]).float()  # (batch, numeric_width + embedding widths)
            for table_grad, (column, start, width) in zip(self.table_grads, self.table_slices):
                table_grad.zero_().index_add_(0, categorical[:, column], input_grad[:, start:start + width])

    def _weight_grad(self, weight_grad: torch.Tensor, bias_grad: torch.Tensor, grad: torch.Tensor,
                     layer_input: torch.Tensor) -> None:
        """Write a linear layer's float32 weight and bias gradients from its output gradient and input."""
        if grad.dtype == torch.float32:
            torch.mm(grad.t(), layer_input, out=weight_grad)  # no temporary
            torch.sum(grad, 0, out=bias_grad)
        else:
            weight_grad.copy_(torch.mm(grad.t(), layer_input))
            bias_grad.copy_(grad.sum(0, dtype=torch.float32))

    def _penalize_and_clip(self) -> None:
        settings = self.settings
        if settings.l1:
            torch._foreach_add_(self.weight_grads, torch._foreach_sign(self.weights), alpha=settings.l1)
        if settings.l2:
            torch._foreach_add_(self.weight_grads, self.weights, alpha=2 * settings.l2)
        if settings.grad_clip:
            norms = torch._foreach_norm(self.grads)
            total = torch.linalg.vector_norm(torch.stack(norms))
            torch._foreach_mul_(self.grads, (settings.grad_clip / (total + 1e-6)).clamp(max=1.0))

    def _optimize(self, lr: float) -> None:
        settings = self.settings
        if settings.optimizer == "sgd":
            torch._fused_sgd_(self.parameters, self.grads, self.momentum, weight_decay=settings.decay,
                              momentum=settings.momentum, lr=lr, dampening=0.0,
                              nesterov=settings.nesterov and settings.momentum > 0, maximize=False,
                              is_first_step=self.first)
            self.first = False
            return
        self.step_count.add_(1)
        decoupled = settings.optimizer == "adamw"
        kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        kernel(self.parameters, self.grads, self.exp_avg, self.exp_avg_sq, [],
               [self.step_count] * len(self.parameters), amsgrad=False, lr=lr, beta1=0.9, beta2=0.999,
               weight_decay=settings.decay, eps=1e-8, maximize=False)
