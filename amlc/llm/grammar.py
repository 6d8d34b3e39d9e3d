"""GBNF grammars: per entity, `" <number> <allowed unit>"` or nothing; per row, one of the row's
candidate answers or nothing (`choice_grammar`).

The leading space matches `prompt.ANSWER_PREFIX`, the completion the model was trained to emit.
Digit runs are bounded, so a model that loves digits still stops. A malformed grammar crashes
llama.cpp inside C (no Python exception), so entity grammars come only from `entity_grammar`
and `validate` parses them against the model's vocabulary in a child process first; a choice
grammar lists only strings that match `CHOICE_RE`, so it is always well formed.

    python -m amlc.llm.grammar MODEL.gguf   # validates every entity grammar; exit 0 when all parse
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from functools import lru_cache
from typing import Sequence

from ..units import ENTITY_UNITS, check_entity
from .prompt import ANSWER_PREFIX

MAX_INT_DIGITS = 7
MAX_FRACTION_DIGITS = 4
# What a choice grammar may list: a number and a unit name. Anything else is refused before it
# reaches llama.cpp, so row grammars need no parse check in a child process.
CHOICE_RE = re.compile(r"\d{1,12}(\.\d{1,12})? [a-z]+( [a-z]+)?")


class GrammarError(RuntimeError):
    """A grammar that llama.cpp would not parse (found in a child process, not by crashing)."""


def _literal(text: str) -> str:
    """A GBNF string literal; units are plain ASCII words but escape what GBNF treats specially."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


@lru_cache(maxsize=None)
def entity_grammar(entity: str) -> str:
    """The GBNF for one entity: optional `ANSWER_PREFIX number " " unit`."""
    check_entity(entity)
    units = " | ".join(_literal(u) for u in ENTITY_UNITS[entity])
    return "\n".join([
        f"root ::= ({_literal(ANSWER_PREFIX)} number \" \" unit)?",
        f"number ::= [0-9]{{1,{MAX_INT_DIGITS}}} (\".\" [0-9]{{1,{MAX_FRACTION_DIGITS}}})?",
        f"unit ::= {units}",
        "",
    ])


def choice_grammar(answers: Sequence[str]) -> str:
    """The GBNF admitting exactly `ANSWER_PREFIX + answer` for one of answers, or nothing."""
    bad = [a for a in answers if not CHOICE_RE.fullmatch(a)]
    if bad or not answers:
        raise ValueError(f"not a list of '<number> <unit>' answers: {bad or 'empty'}")
    options = " | ".join(_literal(a) for a in answers)
    return f"root ::= ({_literal(ANSWER_PREFIX)} ({options}))?\n"


def all_grammars() -> dict[str, str]:
    return {entity: entity_grammar(entity) for entity in ENTITY_UNITS}


def validate(model_path: str, grammars: dict[str, str] | None = None, timeout: float = 120) -> None:
    """Parse each grammar with the model's vocabulary in a child process; raise GrammarError if any fails."""
    grammars = grammars if grammars is not None else all_grammars()
    proc = subprocess.run([sys.executable, "-m", "amlc.llm.grammar", str(model_path)],
                          input=json.dumps(grammars), capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-5:]
        raise GrammarError(f"grammar check failed (exit {proc.returncode}): " + " / ".join(tail))


def _parse_all(model_path: str, grammars: dict[str, str]) -> list[str]:
    """In the child: build each grammar sampler; names of the ones llama.cpp rejects."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path, vocab_only=True, verbose=False)
    bad = []
    for name, text in grammars.items():
        sampler = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, text.encode(), b"root")
        if not sampler:
            bad.append(name)
        else:
            llama_cpp.llama_sampler_free(sampler)
    return bad


if __name__ == "__main__":
    rejected = _parse_all(sys.argv[1], json.loads(sys.stdin.read() or "null") or all_grammars())
    print(json.dumps({"rejected": rejected}))
    sys.exit(1 if rejected else 0)
