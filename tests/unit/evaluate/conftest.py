"""A fake clock for permutation importance under a deadline: tests advance it by a fixed pace a predicted row, so
the deadline's arithmetic is checked exactly on any machine, however busy."""

from __future__ import annotations

import types

import pytest

import keel.evaluate.importance as importance


class Clock:
    """``perf_counter`` reads ``now``, which the tests' predict functions advance."""

    def __init__(self) -> None:
        self.now = 100.0

    def perf_counter(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(importance, "time", types.SimpleNamespace(perf_counter=fake.perf_counter))
    return fake
