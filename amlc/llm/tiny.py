"""A tiny Llama built offline: a locally trained byte-level BPE tokenizer and a short pre-training.

The tokenizer uses Qwen2's pre-tokenizer (digits one by one, a space before a digit stays its
own token), a form llama.cpp implements, so the model converts to GGUF and tokenizes the same
way in llama.cpp. A random model cannot learn to copy digits from a LoRA alone, so `pretrain`
runs a short full training on task text mixed with synthetic "copy" rows (a number and a unit
in noisy text, answered as the labels write it) before any LoRA.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Iterable

from ..units import ENTITY_UNITS, UNIT_ALIASES, Answer
from .prompt import build_prompt, completion

# Qwen2's split pattern (llama.cpp: LLAMA_VOCAB_PRE_TYPE_QWEN2); gguf.py checks for it verbatim.
QWEN2_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
                 r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
EOS = "<|endoftext|>"
FILLER = ("net wt new pack of premium quality size weight capacity with for the and made in "
          "max load approx product dimensions height width depth voltage power volume").split()


@dataclass(frozen=True)
class TinySpec:
    vocab_size: int = 1024       # BPE vocabulary incl. the EOS token
    hidden_size: int = 256       # multiple of 256 so llama.cpp's K-quants apply to every matrix
    intermediate_size: int = 512
    layers: int = 4
    heads: int = 4
    max_positions: int = 2048   # RoPE positions (no parameters); matches the inference context
    pretrain_steps: int = 300    # full-model steps on task text + copy rows
    batch_size: int = 16
    lr: float = 3e-3
    max_length: int = 320        # tokens per training sequence (longer ones are cut)
    copy_rows: int = 4000        # synthetic copy rows mixed into the pre-training text
    seed: int = 0


def train_tokenizer(texts: Iterable[str], vocab_size: int):
    """A byte-level BPE (Qwen2 pre-tokenizer) as a transformers fast tokenizer; no BOS added."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, pad_token=EOS)


def copy_rows(n: int, seed: int = 0) -> list[str]:
    """Synthetic prompt+completion texts whose answer is a number and unit copied from the text."""
    rng = random.Random(seed)
    by_unit: dict[str, list[str]] = {}
    for alias, unit in UNIT_ALIASES.items():
        by_unit.setdefault(unit, []).append(alias)
    rows = []
    for _ in range(n):
        entity = rng.choice(list(ENTITY_UNITS))
        unit = rng.choice(ENTITY_UNITS[entity])
        value = rng.choice([str(rng.randint(1, 999)), f"{rng.randint(0, 99)}.{rng.randint(1, 99)}"])
        mention = f"{value}{rng.choice(['', ' '])}{rng.choice(by_unit[unit])}"
        words = rng.sample(FILLER, rng.randint(2, 10))
        words.insert(rng.randint(0, len(words)), mention)
        answer = Answer(Decimal(value), unit).label_text()
        rows.append(build_prompt(entity, " ".join(words)) + completion(answer))
    return rows


def build_model(spec: TinySpec, vocab_size: int, eos_id: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.layers, num_attention_heads=spec.heads, num_key_value_heads=spec.heads,
        max_position_embeddings=spec.max_positions, tie_word_embeddings=True,
        bos_token_id=eos_id, eos_token_id=eos_id, pad_token_id=eos_id)
    return LlamaForCausalLM(config)


def pretrain(model, tokenizer, texts: list[str], spec: TinySpec) -> list[float]:
    """Full-model causal-LM training on texts (each ends with EOS); returns the loss per step."""
    import torch

    torch.manual_seed(spec.seed)
    rng = random.Random(spec.seed)
    encoded = [tokenizer(t + EOS)["input_ids"][: spec.max_length] for t in texts]
    optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, spec.lr, total_steps=spec.pretrain_steps,
                                                   pct_start=0.1)
    model.train()
    losses = []
    for _ in range(spec.pretrain_steps):
        ids, mask = _pad(rng.sample(encoded, min(spec.batch_size, len(encoded))), tokenizer.pad_token_id)
        labels = ids.masked_fill(mask == 0, -100)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    model.eval()
    return losses


def _pad(batch: list[list[int]], pad_id: int):
    import torch

    width = max(len(x) for x in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, x in enumerate(batch):
        ids[i, : len(x)] = torch.tensor(x)
        mask[i, : len(x)] = 1
    return ids, mask


def make_tiny_model(out_dir: str | Path, task_texts: list[str], spec: TinySpec = TinySpec()) -> dict:
    """Tokenizer + model trained on task_texts (prompt+completion strings) and copy rows, saved in
    HF format under out_dir. Returns a summary (parameters, first/last loss)."""
    import torch

    torch.set_num_threads(1)  # shared CPU cores: one thread is fastest under load
    texts = task_texts + copy_rows(spec.copy_rows, spec.seed)
    tokenizer = train_tokenizer(texts, spec.vocab_size)
    model = build_model(spec, len(tokenizer), tokenizer.eos_token_id)
    losses = pretrain(model, tokenizer, texts, spec)
    out = Path(out_dir)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _pin_no_bos(out)
    summary = {"parameters": sum(p.numel() for p in model.parameters()),
               "first_loss": losses[0], "last_loss": sum(losses[-10:]) / min(10, len(losses)),
               "steps": len(losses), "texts": len(texts)}
    (out / "tiny_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _pin_no_bos(folder: Path) -> None:
    """State in tokenizer_config that no BOS is added, so GGUF metadata and llama.cpp agree."""
    path = folder / "tokenizer_config.json"
    config = json.loads(path.read_text())
    config.update(add_bos_token=False, add_eos_token=False)
    path.write_text(json.dumps(config, indent=2))
