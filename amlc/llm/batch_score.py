"""Many rows' options scored together in one llama.cpp context: for each option, the
log-probability that the model writes it and stops after its row's prompt, as
`score.continuation_logprobs` computes it one row at a time.

A round takes the next rows (shortest prompts first) whose options fit the context's sequences.
Each row's prompt (less its last token) goes into a sequence of its own, every prompt of the
round in one llama_decode; the prompt's cells are then copied to one sequence per further option
(llama_memory_seq_cp); one more llama_decode carries every option's tokens, each after its own
copy of its row's prompt. Each sequence has its own stream of cells (the KV cache is not
unified), so a token's attention spans its own row only: the work grows with the rows, not with
their square.

Two rules of llama.cpp shape the batches. It splits a batch over several streams only where
their sequence numbers follow each other, so the prompts take sequences 0..rows-1 and the further
options the next ones. And it gives every stream the same number of tokens in a step, so an
unequal batch would be cut into pieces, and a piece of one token takes another kernel whose
rounding moves a log-probability by up to 0.05 (measured with SmolLM2 Q4_1). So every prompt of
a round is padded to the longest at its end (the padding's cells are dropped before the options
see them) and every option likewise (its padding comes after the tokens scored), and a decode is
one step: the scores are then those of one row at a time, to the last bit on this CPU.

On a GPU a decode costs about the same for one row or many; on a CPU a prompt is compute-bound
either way, so there rows scored together are no faster (bench/infer.py measures both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .parallel import sequence_context
from .score import log_softmax_at, tokens_of

SCORE_CTX = 512      # KV cells per sequence: our prompts are under 400 tokens, options under 24
SCORE_TOKENS = 4096  # tokens per llama_decode call, computed in one step
MAX_SEQUENCES = 256  # llama.cpp's LLAMA_MAX_SEQ


@dataclass
class _Row:
    index: int                 # position in the caller's list
    head: list[int]            # the prompt's tokens
    tails: list[list[int]]     # each option's tokens, then end of sequence

    @property
    def start(self) -> int:
        """The position of the prompt's last token, where every option's batch starts."""
        return len(self.head) - 1


class BatchScorer:
    """Options of up to `rows` rows (of `options` each) scored per round."""

    def __init__(self, llm: Any, rows: int, options: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llm
        self.width = min(MAX_SEQUENCES, rows * options)
        self.ctx = sequence_context(llm, self.width, SCORE_CTX, SCORE_TOKENS)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(SCORE_TOKENS, 0, 1)
        self.vocab = llm.n_vocab()
        self.rounds = 0   # rounds run, and rows scored in them, since it was made
        self.rows = 0

    def score(self, items: Sequence[tuple[str, Sequence[str]]]) -> list[list[float] | None]:
        """For each (prompt, options): log P(option + EOS | prompt) per option; None where the
        row does not fit a sequence or a decode (the caller scores it another way)."""
        out: list[list[float] | None] = [None] * len(items)
        rows = [row for row in (self._row(i, prompt, options) for i, (prompt, options) in enumerate(items))
                if row is not None]
        rows.sort(key=lambda row: row.start)   # rows of a round alike in length pad little
        while rows:
            taken = self._round(rows)
            for row, scores in zip(taken, self._score_round(taken)):
                out[row.index] = scores
            self.rounds += 1
            self.rows += len(taken)
            rows = rows[len(taken):]
        return out

    def _row(self, index: int, prompt: str, options: Sequence[str]) -> _Row | None:
        head = tokens_of(self.llm, prompt, add_bos=True)
        tails = [tokens_of(self.llm, text, add_bos=False) + [self.llm.token_eos()] for text in options]
        longest = max((len(t) for t in tails), default=0)
        if not head or not tails or len(tails) > self.width or len(head) + longest > SCORE_CTX \
                or len(head) + sum(len(t) for t in tails) > SCORE_TOKENS:
            return None
        return _Row(index, head, tails)

    def _round(self, rows: Sequence[_Row]) -> list[_Row]:
        """The longest run of rows from the first whose options fit the sequences, whose
        prompts, and options, padded to the longest, each fit one decode, and whose longest
        prompt has room in its sequence for the longest option."""
        taken: list[_Row] = []
        sequences = longest_prompt = longest_option = 0
        for row in rows:
            sequences += len(row.tails)
            longest_prompt = max(longest_prompt, row.start)
            longest_option = max([longest_option, *map(len, row.tails)])
            if taken and (sequences > self.width or longest_prompt * (len(taken) + 1) > SCORE_TOKENS
                          or longest_option * sequences > SCORE_TOKENS
                          or longest_prompt + longest_option > SCORE_CTX):
                break
            taken.append(row)
        return taken

    def _score_round(self, rows: Sequence[_Row]) -> list[list[float]]:
        self.lib.llama_memory_clear(self.memory, True)
        self._decode([(seq, row.head[:-1], 0, 0) for seq, row in enumerate(rows)])
        for seq, row in enumerate(rows):   # the padding's cells, dropped
            self.lib.llama_memory_seq_rm(self.memory, seq, row.start, -1)
        placed = self._option_sequences(rows)
        for row_seq, seq, _, _ in placed:
            if seq != row_seq:   # the prompt's cells, copied (llama.cpp copies them at the next decode)
                self.lib.llama_memory_seq_cp(self.memory, row_seq, seq, -1, -1)
        spans = self._decode([(seq, [rows[row_seq].head[-1], *tail[:-1]], rows[row_seq].start, len(tail))
                              for row_seq, seq, _, tail in placed])
        scores: list[list[float]] = [[0.0] * len(row.tails) for row in rows]
        for (row_seq, _, option, tail), first in zip(placed, spans):
            logits = np.stack([self._logits(first + k) for k in range(len(tail))])
            scores[row_seq][option] = log_softmax_at(logits, tail)
        return scores

    @staticmethod
    def _option_sequences(rows: Sequence[_Row]) -> list[tuple[int, int, int, list[int]]]:
        """(row's sequence, option's sequence, option's index, option's tokens) in the order of
        the option's sequence: a row's first option stays in the row's own sequence, the others
        take the sequences after the rows', in turn."""
        placed = [(r, r, 0, row.tails[0]) for r, row in enumerate(rows)]
        extra = [(r, o, tail) for r, row in enumerate(rows) for o, tail in enumerate(row.tails) if o]
        placed += [(r, len(rows) + k, o, tail) for k, (r, o, tail) in enumerate(extra)]
        return placed

    def _decode(self, parts: Sequence[tuple[int, Sequence[int], int, int]]) -> list[int]:
        """One llama_decode of (sequence, tokens, first position, logits wanted for the first
        this many) parts, each padded to the longest; returns each part's first batch index."""
        batch, used, firsts = self.batch, 0, []
        width = max((len(tokens) for _, tokens, _, _ in parts), default=0)
        for seq, tokens, start, scored in parts:
            firsts.append(used)
            padded = [*tokens, *[self.llm.token_eos()] * (width - len(tokens))]
            for offset, token in enumerate(padded):
                batch.token[used] = token
                batch.pos[used] = start + offset
                batch.n_seq_id[used] = 1
                batch.seq_id[used][0] = seq
                batch.logits[used] = offset < scored
                used += 1
        batch.n_tokens = used
        if used and self.lib.llama_decode(self.ctx, batch) != 0:
            raise RuntimeError(f"llama_decode failed on a batch of {len(parts)} sequences")
        return firsts

    def _logits(self, index: int) -> np.ndarray:
        return np.ctypeslib.as_array(self.lib.llama_get_logits_ith(self.ctx, index), shape=(self.vocab,))

    def close(self) -> None:
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None
