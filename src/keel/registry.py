"""One lookup for the registries that resolve string options (activations, optimizers, losses, ...).

Each string option of the config is a ``Literal`` whose values are the keys of one registry dict
next to the code that uses it; ``tests/unit/test_registries.py`` checks the two agree. Looking a
name up here, rather than indexing the dict, turns a bad name from the Python API (where pydantic
has not validated it) into a ConfigError that lists the valid names.
"""

from __future__ import annotations

from typing import Mapping, TypeVar

from keel.errors import ConfigError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], option: str, name: str) -> T:
    """The entry of ``registry`` for ``name``.

    Args:
        registry: The option's registry, keyed by the config's ``Literal`` values.
        option: The config key, as a user writes it (``model.activation``), for the message.
        name: The requested value.

    Returns:
        The registered entry.

    Raises:
        ConfigError: ``name`` is not a key of ``registry``; the message lists the keys.

    Example:
        >>> lookup({"relu": 1, "tanh": 2}, "model.activation", "tanh")
        2
    """
    try:
        return registry[name]
    except (KeyError, TypeError):
        valid = ", ".join(sorted(registry))
        raise ConfigError(
            f"{option} must be one of {valid}; got {name!r}. Set it in the config or pass "
            f"--set {option}={next(iter(registry))}."
        ) from None
