"""Many rows decoded together in one llama.cpp context: one sequence per row, each under its
entity's grammar, greedy, with continuous batching.

llama-cpp-python's high-level `Llama` decodes one sequence at a time (`create_completion`), so this
uses its low-level bindings: a context with `width` sequences, one `llama_decode` per step that
carries the next token of every running row plus the prompts of rows joining (a row that ends
frees its sequence for the next one at once), and per row a sampler chain (grammar, then greedy)
cloned from its entity's. On a GPU a step costs about the same for one row or many; on a CPU the
weights are read once per step for all rows. Answers match `create_completion`'s: the same
tokens (BOS as the model asks, special tokens parsed), the same chain, stop at end of generation
or MAX_ANSWER_TOKENS; only floating-point rounding of batched arithmetic can differ.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Sequence

SEQ_CTX = 768        # KV cells per sequence: our prompts are under 400 tokens, answers under 24
STEP_TOKENS = 2048   # tokens per llama_decode call, prompts of joining rows included


@dataclass
class _Row:
    index: int           # position in the caller's list
    sampler: Any         # llama_sampler_p: grammar + greedy, this row's own state
    position: int        # next token's position in its sequence
    logits_at: int       # where its logits are in the last step's batch
    tokens: list[int] = field(default_factory=list)


def sequence_context(llm: Any, sequences: int, cells: int, batch_tokens: int) -> Any:
    """A llama.cpp context on llm's model with llm's settings (threads, attention kind, RoPE),
    so the arithmetic is the one its own context runs, with `cells` KV cells for each of
    `sequences`, each in a stream of its own (a token attends to its own sequence only)."""
    import llama_cpp

    params = llama_cpp.llama_context_params.from_buffer_copy(llm.context_params)
    params.n_ctx = sequences * cells
    params.n_batch = params.n_ubatch = batch_tokens   # one step per decode
    params.n_seq_max = sequences
    params.kv_unified = False
    ctx = llama_cpp.llama_init_from_model(llm.model, params)
    if not ctx:
        raise RuntimeError(f"llama.cpp could not make a context for {sequences} sequences")
    return ctx


class ParallelDecoder:
    """Greedy, grammar-constrained completions of up to `width` rows at a time."""

    def __init__(self, llm: Any, grammars: dict[str, str], width: int, max_tokens: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llm  # a llama_cpp.Llama: its model, tokenizer and thread settings are shared
        self.width = width
        self.max_tokens = max_tokens
        self.ctx = sequence_context(llm, width, SEQ_CTX, STEP_TOKENS)
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(llm.model)
        self.batch = llama_cpp.llama_batch_init(STEP_TOKENS, 0, 1)
        self.grammars = {entity: self._chain(text) for entity, text in grammars.items()}

    def _chain(self, grammar: str) -> Any:
        lib = self.lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_grammar(self.vocab, grammar.encode(), b"root"))
        lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_greedy())
        return chain

    def complete(self, items: Sequence[tuple[str, str]]) -> list[str | None]:
        """Completion text per (entity, prompt); None for a prompt too long for a sequence."""
        out: list[str | None] = [None] * len(items)
        waiting = deque(enumerate(items))
        running: dict[int, _Row] = {}
        free = list(range(self.width))
        while waiting or running:
            used = self._continue(running)
            while waiting and free:
                index, (entity, prompt) = waiting[0]
                tokens = self.llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
                if len(tokens) + self.max_tokens > SEQ_CTX:
                    waiting.popleft()  # left None: the caller answers it another way
                    continue
                if used + len(tokens) > STEP_TOKENS:
                    break
                waiting.popleft()
                seq = free.pop()
                used = self._add(tokens, seq, used)
                running[seq] = _Row(index, self.lib.llama_sampler_clone(self.grammars[entity]),
                                    len(tokens), used - 1)
            self.batch.n_tokens = used
            if used and self.lib.llama_decode(self.ctx, self.batch) != 0:
                raise RuntimeError("llama_decode failed on a batch of parallel rows")
            for seq in self._sample(running):
                row = running.pop(seq)
                out[row.index] = self.llm.detokenize(row.tokens).decode("utf-8", errors="ignore")
                self.lib.llama_sampler_free(row.sampler)
                self.lib.llama_memory_seq_rm(self.memory, seq, -1, -1)
                free.append(seq)
        return out

    def _continue(self, running: dict[int, _Row]) -> int:
        """Put every running row's last token in the batch; returns tokens in it."""
        used = 0
        for seq, row in running.items():
            used = self._add(row.tokens[-1:], seq, used, start=row.position)
            row.position += 1
            row.logits_at = used - 1
        return used

    def _add(self, tokens: Sequence[int], seq: int, used: int, start: int = 0) -> int:
        """Tokens of one sequence at positions start.., logits for the last only."""
        batch = self.batch
        for offset, token in enumerate(tokens):
            at = used + offset
            batch.token[at] = token
            batch.pos[at] = start + offset
            batch.n_seq_id[at] = 1
            batch.seq_id[at][0] = seq
            batch.logits[at] = offset == len(tokens) - 1
        return used + len(tokens)

    def _sample(self, running: dict[int, _Row]) -> list[int]:
        """Sample each running row's next token; returns the sequences that finished."""
        done = []
        for seq, row in running.items():
            token = self.lib.llama_sampler_sample(row.sampler, self.ctx, row.logits_at)
            if self.lib.llama_vocab_is_eog(self.vocab, token):
                done.append(seq)
                continue
            row.tokens.append(token)
            if len(row.tokens) >= self.max_tokens:
                done.append(seq)
        return done

    def close(self) -> None:
        for chain in self.grammars.values():
            self.lib.llama_sampler_free(chain)
        self.grammars = {}
        if self.ctx:
            self.lib.llama_batch_free(self.batch)
            self.lib.llama_free(self.ctx)
            self.ctx = None

