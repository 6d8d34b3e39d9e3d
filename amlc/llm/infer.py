"""Grammar-constrained greedy answers from a GGUF model with llama-cpp-python.

llama-cpp-python's high-level API decodes one sequence at a time, but it reuses the KV cache for
the longest prefix shared with the previous prompt; prompts of one entity share their header
(entity and units), so items are answered sorted by (entity, prompt), each distinct pair once.
With `parallel` > 1 rows are taken together instead: their options scored in one batch
(`batch_score.BatchScorer`, the same scores) and free-text rows decoded together
(`parallel.ParallelDecoder`).
The daemon runs one engine per worker process (`LlmSpec`, amlc.workers): on a CPU, N processes
of one thread each; with a GPU build of llama.cpp, every layer is offloaded by default.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Callable, Sequence

from ..units import prediction_error
from .api import check_bindings, check_members
from .batch_score import BatchScorer
from .choice import ChoiceItem, score_items
from .grammar import all_grammars, validate
from .parallel import ParallelDecoder
from .prompt import CHOICES, answer_text, unique_items

MAX_ANSWER_TOKENS = 24  # " 1234567.1234 imperial gallon" is under 20 tokens for our tokenizers
DEFAULT_CTX = 2048
# On a GPU: llama.cpp processes sharing it (while one samples and checks grammars on the CPU,
# the other decodes) and rows each decodes together. On a CPU, rows go one at a time: there the
# prompts dominate and are compute-bound, and rows scored together measured slower
# (bench/infer.py: 0.68x at --llm-batch 8, same answers).
GPU_WORKERS = 2
GPU_PARALLEL = 64


@dataclass
class LlamaEngine:
    """A loaded model and its validated per-entity grammars."""

    llm: object
    grammars: dict[str, object] = field(default_factory=dict)
    too_long: int = 0  # prompts that did not fit the context (answered blank)
    parallel: object = None  # a ParallelDecoder when rows are decoded together
    scorer: object = None    # a BatchScorer when rows' options are scored together
    prompt_tokens: int = 0  # tokens evaluated or reused from the cache, summed over calls
    completion_tokens: int = 0

    def generate(self, prompt: str, entity: str | None = None, max_tokens: int = MAX_ANSWER_TOKENS,
                 grammar: object = None) -> str:
        """Greedy completion text; under `grammar`, else the entity's grammar when entity is given."""
        grammar = grammar or (self.grammars[entity] if entity else None)
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
        return checked(entity, self.generate(prompt, entity))

    def answer_together(self, items: Sequence[tuple[str, str]]) -> list[str]:
        """Answers for (entity, prompt) items decoded in parallel; one by one without a decoder,
        and for a prompt too long for its share of the parallel context."""
        if self.parallel is None or len(items) < 2:
            return [self.answer(*item) for item in items]
        texts = self.parallel.complete(items)
        return [self.answer(*item) if text is None else checked(item[0], text)
                for item, text in zip(items, texts)]


def checked(entity: str, completion: str) -> str:
    """The answer in a completion if it is a valid cell for the entity, else blank."""
    text = answer_text(completion)
    return text if prediction_error(text, entity) is None else ""


def default_gpu_layers() -> int:
    """All layers (-1) when this llama.cpp build can offload to a GPU, else none."""
    import llama_cpp

    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


def load_llama(model_path: str, n_threads: int = 1, n_ctx: int = DEFAULT_CTX, check: bool = True,
                gpu_layers: int | None = None, parallel: int = 1) -> LlamaEngine:
    """Load a GGUF model; grammars are parsed in a child process first (a bad one would crash us).

    gpu_layers: layers offloaded to the GPU, -1 for all; None: all when the build can offload.
    parallel: rows taken together (1: one at a time, reusing shared prompt prefixes).
    """
    import llama_cpp

    check_bindings()  # a clear refusal, not an AttributeError mid-run, on an untested build
    if check:
        validate(model_path)
    layers = default_gpu_layers() if gpu_layers is None else gpu_layers
    llm = llama_cpp.Llama(model_path, n_ctx=n_ctx, n_threads=n_threads, n_threads_batch=n_threads,
                          n_batch=512, n_gpu_layers=layers, verbose=False)
    check_members(llm)
    grammars = {e: llama_cpp.LlamaGrammar.from_string(g, verbose=False) for e, g in all_grammars().items()}
    if parallel < 2:
        return LlamaEngine(llm, grammars)
    return LlamaEngine(llm, grammars, parallel=ParallelDecoder(llm, all_grammars(), parallel, MAX_ANSWER_TOKENS),
                       scorer=BatchScorer(llm, parallel, CHOICES))


def answer_items(engine: LlamaEngine, items: Sequence[tuple[str, str] | ChoiceItem]) -> list:
    """Answers for (entity, prompt) items, each distinct item decoded once, in prefix-sharing order;
    a ChoiceItem gets its options scored instead (amlc.llm.choice.Scored)."""
    distinct, index = unique_items(items)
    order = sorted(range(len(distinct)), key=lambda i: distinct[i])
    texts = [i for i in order if not isinstance(distinct[i], ChoiceItem)]
    choices = [i for i in order if isinstance(distinct[i], ChoiceItem)]
    answers: dict[int, object] = dict(zip(texts, engine.answer_together([distinct[i] for i in texts])))
    answers.update(zip(choices, score_items(engine, [distinct[i] for i in choices])))
    return [answers[i] for i in index]


@dataclass(frozen=True)
class LlmSpec:
    """A picklable recipe for one llama.cpp engine, built once in each worker (`amlc.workers`)."""

    model_path: str
    n_threads: int = 1
    gpu_layers: int | None = None  # None: all layers when llama.cpp can offload
    n_ctx: int = DEFAULT_CTX
    parallel: int = 1              # rows decoded together

    def build(self) -> Callable[[Sequence[tuple[str, str]]], list[str]]:
        engine = load_llama(self.model_path, self.n_threads, self.n_ctx, gpu_layers=self.gpu_layers,
                             parallel=self.parallel)
        return partial(answer_items, engine)


def offloads(gpu_layers: int | None) -> bool:
    """Whether --gpu-layers (None: the default) puts any layer on a GPU."""
    return (default_gpu_layers() if gpu_layers is None else gpu_layers) != 0


def default_parallel(offloads: bool) -> int:
    return GPU_PARALLEL if offloads else 1


def default_llm_workers(offloads: bool) -> int:
    """One single-threaded process per core on a CPU; on a GPU, GPU_WORKERS processes share it."""
    from ..workers import cores

    return min(GPU_WORKERS, cores()) if offloads else cores()


def predict_texts(model_path: str, items: Sequence[tuple[str, str]], n_threads: int = 1) -> list[str]:
    """Answers ("<number> <unit>" or "") for (entity, prompt) items with the GGUF model at model_path."""
    return answer_items(load_llama(model_path, n_threads=n_threads), items)
