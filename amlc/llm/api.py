"""The llama-cpp-python calls amlc relies on beyond its stable high-level API, checked at load.

Option scoring (score.py, batch_score.py) and batched decoding (parallel.py) use the low-level bindings and a few
private members of `Llama`; they are tested on TESTED and pinned to it in pyproject.toml. A
build without one of them (another version, a GPU rebuild left unpinned) is refused when a model
loads, naming the missing call and the version to install, instead of an AttributeError midway
through a run.
"""

from __future__ import annotations

from typing import Any

TESTED = "0.3.36"

# Module-level bindings: batched decoding, samplers, memory (KV cache) and grammar parsing.
BINDINGS = (
    "llama_init_from_model", "llama_get_memory", "llama_model_get_vocab", "llama_batch_init",
    "llama_batch_free", "llama_decode", "llama_free", "llama_memory_seq_rm", "llama_memory_seq_cp",
    "llama_memory_clear", "llama_get_logits_ith", "llama_context_params",
    "llama_sampler_chain_init", "llama_sampler_chain_default_params", "llama_sampler_chain_add",
    "llama_sampler_init_grammar", "llama_sampler_init_greedy", "llama_sampler_clone",
    "llama_sampler_sample", "llama_sampler_free", "llama_vocab_is_eog", "llama_supports_gpu_offload",
)
# Members of a loaded Llama that option scoring uses: the cache's tokens, and one decode over them.
MEMBERS = ("input_ids", "n_tokens", "eval", "context_params", "model", "_ctx.kv_cache_seq_rm",
           "_ctx.decode", "_ctx.get_logits", "_batch.set_batch")


class LlamaApiError(RuntimeError):
    """This llama-cpp-python lacks a call amlc uses."""


def _missing(obj: Any, names: tuple[str, ...]) -> list[str]:
    gone = []
    for name in names:
        target = obj
        for part in name.split("."):
            target = getattr(target, part, None)
            if target is None:
                gone.append(name)
                break
    return gone


def _refuse(gone: list[str], where: str) -> None:
    import llama_cpp

    raise LlamaApiError(
        f"llama-cpp-python {getattr(llama_cpp, '__version__', '?')} lacks {', '.join(where + g for g in gone)}, which "
        f"amlc's option scoring and batched decoding call (tested on {TESTED}): "
        f"pip install 'llama-cpp-python=={TESTED}' (with CMAKE_ARGS=\"-DGGML_CUDA=on\" for a GPU)")


def check_bindings() -> None:
    """Before a model loads: every module-level call is there."""
    import llama_cpp

    gone = _missing(llama_cpp, BINDINGS)
    if gone:
        _refuse(gone, "llama_cpp.")


def check_members(llm: Any) -> None:
    """After a model loads: the private members of `Llama` that scoring reaches into."""
    gone = _missing(llm, MEMBERS)
    if gone:
        _refuse(gone, "Llama.")
