"""The words of a text as TF-IDF text columns count them: one rule for training, ONNX feeds and any client.

Imports only ``re``: the torch-free predictor (:mod:`keel.runtime`) turns request texts into the
exported graph's term ids with the same functions keel trained with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# scikit-learn's default token: two or more word characters (Unicode), so "a" and "I" carry nothing.
WORD = re.compile(r"\w\w+")


def terms(text: str) -> list[str]:
    """The words (lower-cased) and adjacent word pairs of one text, in order.

    Example:
        >>> terms("An order, arrived!")
        ['an', 'order', 'arrived', 'an order', 'order arrived']
    """
    words = WORD.findall(text.lower())
    return words + [f"{first} {second}" for first, second in zip(words, words[1:])]


def term_ids(texts: Sequence[str], index: Mapping[str, int]) -> list[list[int]]:
    """Each text's terms as vocabulary positions (``index``: term -> position), terms outside it left out.

    An empty (or all-whitespace) text is ``[len(index)]``, one past the vocabulary: the exported graph
    reads that id as the text's empty flag.
    """
    empty = [len(index)]
    return [[index[term] for term in terms(text) if term in index] if text.strip() else empty for text in texts]
