"""The balanced preset's step and prediction, made cheaper (issue 15): each change checked against the
plain computation it replaces."""

from __future__ import annotations

import pytest
import torch

from keel.config import TrainingConfig
from keel.nn.network import NetworkSpec, TabularNetwork, predict_outputs
from keel.train.trainer import build_optimizer


def _ensemble(k: int = 8, seed: int = 0) -> TabularNetwork:
    torch.manual_seed(seed)
    spec = NetworkSpec(numeric_width=5, cardinalities=[4, 30], n_outputs=3, hidden=[32, 32], dropout=0.0,
                       numeric_embedding="piecewise_linear", numeric_embedding_size=4, numeric_embedding_dim=6,
                       ensemble=k, task="multiclass")
    network = TabularNetwork(spec)
    network.numbers.fit_bins(torch.randn(500, 5))  # type: ignore[union-attr]
    return network


def _rows(n: int, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    categorical = torch.stack([torch.randint(0, 4, (n,), generator=generator),
                               torch.randint(0, 30, (n,), generator=generator)], dim=1)
    return torch.randn(n, 5, generator=generator), categorical


def test_an_ensemble_predicts_in_batches_of_rows_over_members() -> None:
    network, (numeric, categorical) = _ensemble(), _rows(3000)
    seen: list[int] = []
    hook = network.mlp.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    chunked = predict_outputs(network, numeric, categorical, batch_size=4096)
    hook.remove()
    # 4096 rows through the MLP at a time: 512 table rows of 8 members each (the last batch the rest).
    assert seen == [4096] * 5 + [(3000 - 5 * 512) * 8]
    whole = predict_outputs(network, numeric, categorical, batch_size=10**9)  # one batch of every row
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    single = _ensemble(k=1)
    seen.clear()
    hook = single.mlp.register_forward_pre_hook(lambda module, inputs: seen.append(len(inputs[0])))
    predict_outputs(single, numeric, categorical, batch_size=1024)
    hook.remove()
    assert seen == [1024, 1024, 952]  # one network: rows as they are


def test_bfloat16_members_match_float32_and_feed_the_first_layer_bfloat16() -> None:
    network, (numeric, categorical) = _ensemble(), _rows(64)
    target = torch.randint(0, 3, (64 * 8,), generator=torch.Generator().manual_seed(2))

    def gradients(precision: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        network.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
            outputs = network.members(numeric, categorical)
        torch.nn.functional.cross_entropy(outputs.float().flatten(0, 1), target).backward()
        return outputs.detach().float(), {name: p.grad.clone() for name, p in network.named_parameters()}

    first = network.mlp[0]
    dtypes: list[torch.dtype] = []
    hook = first.register_forward_pre_hook(lambda module, inputs: dtypes.append(inputs[0].dtype))
    outputs16, grads16 = gradients("bfloat16")
    outputs32, grads32 = gradients("float32")
    hook.remove()
    # Under autocast the adapter's product is formed in bfloat16 (no cast of the k-times-larger product).
    assert dtypes == [torch.bfloat16, torch.float32]
    torch.testing.assert_close(outputs16, outputs32, rtol=0.05, atol=0.03)
    assert set(grads16) == set(grads32) and "adapter" in grads16
    for name, grad in grads32.items():  # every gradient, the adapter's included, reaches float32 parameters
        assert grads16[name].dtype == torch.float32, name
        cosine = torch.nn.functional.cosine_similarity(grads16[name].flatten(), grad.flatten(), dim=0)
        assert cosine > 0.99, (name, float(cosine))


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_steps_with_the_fused_kernel_as_the_default_one_does(optimizer: str) -> None:
    settings = TrainingConfig(optimizer=optimizer, lr=0.01, weight_decay=0.01)
    fused, plain = _ensemble(seed=3), _ensemble(seed=3)
    built = build_optimizer(fused, settings)
    assert built.defaults["fused"] is True
    reference_class = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    reference = reference_class(list(plain.parameters()), lr=0.01, weight_decay=0.01, foreach=True)
    numeric, categorical = _rows(128)
    target = torch.randint(0, 3, (128 * 8,), generator=torch.Generator().manual_seed(4))
    for network, step in ((fused, built), (plain, reference)):
        for _ in range(5):
            step.zero_grad()
            loss = torch.nn.functional.cross_entropy(network.members(numeric, categorical).flatten(0, 1), target)
            loss.backward()
            step.step()
    for (name, a), (_, b) in zip(fused.named_parameters(), plain.named_parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6, msg=name)
