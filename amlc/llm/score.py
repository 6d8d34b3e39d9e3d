"""How likely a model finds each of several continuations of one prompt, with llama.cpp.

The prompt is evaluated once (its cached prefix from the previous call reused, as llama.cpp's
own generate does); each continuation is then one batch that starts with the prompt's last token,
so the logits of every continuation token come from a single decode over the shared cache. The
KV cells past the prompt are dropped before the next continuation.

A continuation's score is the log-probability of its tokens followed by the end-of-sequence
token: the probability that the model writes exactly that answer and stops.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def tokens_of(llm, text: str, add_bos: bool) -> list[int]:
    return llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=add_bos)


def _reuse_prefix(llm, tokens: Sequence[int]) -> None:
    """Evaluate tokens after the longest prefix already in the cache."""
    cached = llm.input_ids[: llm.n_tokens]
    keep = 0
    for a, b in zip(cached, tokens):
        if a != b:
            break
        keep += 1
    llm.n_tokens = keep
    llm.eval(list(tokens[keep:]))  # drops the cache past `keep` first


def log_softmax_at(logits: np.ndarray, targets: Sequence[int]) -> float:
    """Sum over rows of log softmax(row)[target]."""
    top = logits.max(axis=1, keepdims=True)
    norm = np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0]
    return float(sum(logits[i, t] - norm[i] for i, t in enumerate(targets)))


def continuation_logprobs(llm, prompt: str, continuations: Sequence[str]) -> list[float] | None:
    """log P(continuation + EOS | prompt) for each continuation; None when they do not fit the context.

    `llm` is a llama_cpp.Llama. Its cache keeps the prompt less its last token afterwards, so a
    following call or `create_completion` with the same prompt re-evaluates one token only."""
    head = tokens_of(llm, prompt, add_bos=True)
    tails = [tokens_of(llm, text, add_bos=False) + [llm.token_eos()] for text in continuations]
    if not head or len(head) + max((len(t) for t in tails), default=0) > llm.n_ctx():
        return None
    _reuse_prefix(llm, head[:-1])
    start = len(head) - 1
    vocab = llm.n_vocab()
    scores = []
    for tail in tails:
        batch = [head[-1], *tail[:-1]]  # each position predicts the next token of the tail
        llm._ctx.kv_cache_seq_rm(-1, start, -1)
        llm._batch.set_batch(batch=batch, n_past=start, logits_all=True)
        llm._ctx.decode(llm._batch)
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(len(batch) * vocab,))
        scores.append(log_softmax_at(logits.reshape(len(batch), vocab), tail))
    llm._ctx.kv_cache_seq_rm(-1, start, -1)
    return scores
