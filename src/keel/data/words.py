"""The words of a text as TF-IDF text columns count them: one rule for training, ONNX feeds and any client.

Imports only ``re``: the torch-free predictor (:mod:`keel.runtime`) turns request texts into the
exported graph's term ids with the same functions keel trained with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

# scikit-learn's default token: two or more word characters (Unicode), so "a" and "I" carry nothing.
WORD = re.compile(r"\w\w+")
# Starts every character n-gram term (text.char_ngrams). Words are word characters only and pairs two words
# around one space, so a term that starts with "#" is never one of them: "#ord" (of "word") is not the word "ord".
CHAR_MARK = "#"
# text.char_ngrams: the longest character n-gram (longer ones are mostly whole tokens, which the words count already).
# Here, not in keel.config, so the torch-free runtime bounds an export's char_ngrams by it too.
MAX_CHAR_NGRAM = 10


def terms(text: str, char_ngrams: tuple[int, int] | None = None) -> list[str]:
    """The words (lower-cased) and adjacent word pairs of one text, in order; with ``char_ngrams`` (low, high),
    then the character n-grams of each of its tokens (:func:`char_grams`).

    Example:
        >>> terms("An order, arrived!")
        ['an', 'order', 'arrived', 'an order', 'order arrived']
        >>> terms("Big cats!", (3, 4))[3:]
        ['# bi', '#big', '#ig ', '# big', '#big ', '# ca', '#cat', '#ats', '#ts!', '#s! ', '# cat', '#cats', '#ats!', '#ts! ']
    """
    lowered = text.lower()
    words = WORD.findall(lowered)
    pairs = [f"{first} {second}" for first, second in zip(words, words[1:])]
    if char_ngrams is None:
        return words + pairs
    return words + pairs + [gram for token in lowered.split() for gram in char_grams(token, *char_ngrams)]


def char_grams(token: str, low: int, high: int) -> list[str]:
    """The character n-grams of one token (a run of characters other than whitespace, punctuation kept: the
    ``,`` of ``cats,`` tells as much as the ``!`` of a tweet), ``low`` to ``high`` characters (Unicode code points)
    long, of the token between two spaces (so a gram at its start or end says so), each marked with
    :data:`CHAR_MARK`; shortest first, each length left to right. Tokens, not words, since a measurement said so
    (README, text columns).

    Example:
        >>> char_grams("cat", 3, 5)
        ['# ca', '#cat', '#at ', '# cat', '#cat ', '# cat ']
    """
    padded = f" {token} "
    return [CHAR_MARK + padded[start:start + size] for size in range(low, high + 1)
            for start in range(len(padded) - size + 1)]


def term_ids(texts: Sequence[str], index: Mapping[str, int],
             char_ngrams: tuple[int, int] | None = None) -> list[list[int]]:
    """Each text's terms (:func:`terms`, with ``char_ngrams``) as vocabulary positions (``index``: term ->
    position), terms outside it left out.

    An empty (or all-whitespace) text is ``[len(index)]``, one past the vocabulary: the exported graph
    reads that id as the text's empty flag.
    """
    empty = [len(index)]
    return [[index[term] for term in terms(text, char_ngrams) if term in index] if text.strip() else empty
            for text in texts]
