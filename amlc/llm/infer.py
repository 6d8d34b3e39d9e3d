"""Grammar-constrained greedy answers from a GGUF model with llama-cpp-python.

llama-cpp-python's high-level API decodes one sequence at a time, but it reuses the KV cache for
the longest prefix shared with the previous prompt; prompts of one entity share their header
(entity and units), so items are answered sorted by (entity, prompt), each distinct pair once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ..units import prediction_error
from .grammar import all_grammars, validate
from .prompt import answer_text, unique_items

MAX_ANSWER_TOKENS = 24  # " 1234567.1234 imperial gallon" is under 20 tokens for our tokenizers
DEFAULT_CTX = 2048


@dataclass
class Engine:
    """A loaded model and its validated per-entity grammars."""

    llm: object
    grammars: dict[str, object] = field(default_factory=dict)
    too_long: int = 0  # prompts that did not fit the context (answered blank)
    prompt_tokens: int = 0  # tokens evaluated or reused from the cache, summed over calls
    completion_tokens: int = 0

    def generate(self, prompt: str, entity: str | None = None, max_tokens: int = MAX_ANSWER_TOKENS) -> str:
        """Greedy completion text; under the entity's grammar when entity is given."""
        grammar = self.grammars[entity] if entity else None
        try:
            out = self.llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0,
                                             grammar=grammar)
        except ValueError:  # prompt longer than the context
            self.too_long += 1
            return ""
        self.prompt_tokens += out["usage"]["prompt_tokens"]
        self.completion_tokens += out["usage"]["completion_tokens"]
        return out["choices"][0]["text"]

    def answer(self, entity: str, prompt: str) -> str:
        """A submission cell: valid by the grammar, and checked again (blank if it is not)."""
        text = answer_text(self.generate(prompt, entity))
        return text if prediction_error(text, entity) is None else ""


def load_engine(model_path: str, n_threads: int = 1, n_ctx: int = DEFAULT_CTX, check: bool = True) -> Engine:
    """Load a GGUF model; grammars are parsed in a child process first (a bad one would crash us)."""
    import llama_cpp

    if check:
        validate(model_path)
    llm = llama_cpp.Llama(model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                          n_batch=512, verbose=False)
    grammars = {e: llama_cpp.LlamaGrammar.from_string(g, verbose=False) for e, g in all_grammars().items()}
    return Engine(llm, grammars)


def answer_items(engine: Engine, items: Sequence[tuple[str, str]]) -> list[str]:
    """Answers for (entity, prompt) items, each distinct item decoded once, in prefix-sharing order."""
    distinct, index = unique_items(items)
    answers: dict[int, str] = {}
    for i in sorted(range(len(distinct)), key=lambda i: distinct[i]):
        entity, prompt = distinct[i]
        answers[i] = engine.answer(entity, prompt)
    return [answers[i] for i in index]


def predict_texts(model_path: str, items: Sequence[tuple[str, str]], n_threads: int = 1) -> list[str]:
    """Answers ("<number> <unit>" or "") for (entity, prompt) items with the GGUF model at model_path."""
    return answer_items(load_engine(model_path, n_threads=n_threads), items)
