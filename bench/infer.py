"""Answer throughput of the LLM path, side by side on the same prompts and model:

1. amlc's predict (per-entity grammar, each distinct item once, prefix-sharing order);
2. a bare llama-cpp-python loop (every item, input order, no grammar);
3. transformers' `generate` on the merged PyTorch model (greedy).

Prints answers/s and tokens/s for each and the ratios against amlc's predict.

    .venv/bin/python bench/infer.py --gguf EXPORT/model-q8_0.gguf --merged EXPORT/merged --data SFT/val.jsonl
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

from amlc.llm.export import hf_greedy
from amlc.llm.infer import MAX_ANSWER_TOKENS, answer_items, load_engine
from amlc.llm.sft import read_jsonl


def timed(run: Callable[[], int]) -> tuple[float, int]:
    started = time.perf_counter()
    tokens = run()
    return time.perf_counter() - started, tokens


def ours(gguf: str, items: list[tuple[str, str]], threads: int) -> int:
    engine = load_engine(gguf, n_threads=threads)
    answer_items(engine, items)
    return engine.completion_tokens


def bare(gguf: str, items: list[tuple[str, str]], threads: int) -> int:
    import llama_cpp

    llm = llama_cpp.Llama(gguf, n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    return sum(llm.create_completion(p, max_tokens=MAX_ANSWER_TOKENS, temperature=0.0)["usage"]["completion_tokens"]
               for _, p in items)


def transformers_generate(merged: str, items: list[tuple[str, str]]) -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(merged)
    texts = hf_greedy(merged, [p for _, p in items], MAX_ANSWER_TOKENS)
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1 for t in texts)  # +1: the EOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", required=True)
    parser.add_argument("--merged", help="merged HF folder (skip transformers when absent)")
    parser.add_argument("--data", required=True, help="SFT JSONL with prompt and entity")
    parser.add_argument("--n", type=int, default=100, help="prompts")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    items = [(r["entity"], r["prompt"]) for r in read_jsonl(args.data)[: args.n]]
    runs = {"amlc predict": lambda: ours(args.gguf, items, args.threads),
            "bare llama-cpp-python": lambda: bare(args.gguf, items, args.threads)}
    if args.merged:
        runs["transformers generate"] = lambda: transformers_generate(args.merged, items)
    results = {name: timed(run) for name, run in runs.items()}
    base_rate = len(items) / results["amlc predict"][0]
    print(f"{len(items)} prompts, {args.threads} thread(s), model {args.gguf}")
    print(f"{'path':24} {'seconds':>8} {'answers/s':>10} {'gen tok/s':>10} {'amlc faster by':>15}")
    for name, (seconds, tokens) in results.items():
        rate = len(items) / seconds
        print(f"{name:24} {seconds:>8.2f} {rate:>10.2f} {tokens / seconds:>10.1f} {base_rate / rate:>14.2f}x")


if __name__ == "__main__":
    main()
