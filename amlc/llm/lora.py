"""LoRA fine-tuning: Unsloth when CUDA is present and it imports, else PEFT + TRL's SFTTrainer.

The choice is made at run time, logged, written to `train_info.json` and returned. Unsloth is
only imported when `torch.cuda.is_available()`, with `UNSLOTH_DISABLE_CPU_FALLBACK=1`, because
on a CPU its fallback would patch TRL for the whole process.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from .origin import ORIGIN, copy_origin

log = logging.getLogger(__name__)
CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class TrainConfig:
    """Hyperparameters; configs/*.toml documents each one."""

    max_steps: int = 600
    batch_size: int = 8
    grad_accum: int = 1
    learning_rate: float = 1e-3
    warmup_ratio: float = 0.05
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    max_length: int = 384
    lora_layers: int = 0  # 0: every layer; N: only the last N (backward stops below them: cheaper)
    save_steps: int = 100
    save_total_limit: int = 2
    logging_steps: int = 10
    seed: int = 0
    threads: int = 1
    max_minutes: float = 0.0  # 0: no time budget; else training stops after the step that passes it
    eval_rows: int = 0        # held-out rows whose loss is measured every eval_steps (0: none)
    eval_steps: int = 20


@dataclass
class TrainResult:
    backend: str          # "unsloth" or "peft"
    adapter_dir: Path
    steps: int
    final_loss: float | None
    seconds: float
    curve: list[dict] = field(default_factory=list)  # per logged step: step, loss and/or eval_loss


def load_config(path: str | Path | None = None, **overrides) -> TrainConfig:
    """A TrainConfig from a TOML file (a bare name means configs/NAME.toml); unknown keys raise."""
    values: dict = {}
    if path:
        p = Path(path)
        if not p.exists() and (CONFIG_DIR / f"{p.name}.toml").exists():
            p = CONFIG_DIR / f"{p.name}.toml"
        values = tomllib.loads(p.read_text(encoding="utf-8"))
    values.update({k: v for k, v in overrides.items() if v is not None})
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown config keys: {', '.join(sorted(unknown))}")
    return TrainConfig(**values)


def is_gguf(base: str | Path) -> bool:
    return str(base).endswith(".gguf")


def load_base(base: str | Path):
    """(model, tokenizer) in float32 from an HF folder or a GGUF file (dequantized by transformers;
    the tokenizer rebuilt from the GGUF's own vocabulary, see gguf_tokenizer.py)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gguf_tokenizer import tokenizer_from_gguf

    p = Path(base)
    if is_gguf(p):
        tokenizer = tokenizer_from_gguf(p)
        model = AutoModelForCausalLM.from_pretrained(p.parent, gguf_file=p.name, dtype=torch.float32)
        _align_special_tokens(model, tokenizer)
    else:
        tokenizer = AutoTokenizer.from_pretrained(p)
        model = AutoModelForCausalLM.from_pretrained(p, dtype=torch.float32)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer


def _align_special_tokens(model, tokenizer) -> None:
    """The model's EOS/PAD ids as the GGUF states them (llama.cpp stops on that EOS)."""
    for config in (model.config, model.generation_config):
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = tokenizer.pad_token_id


def materialize_base(base: str | Path, folder: Path) -> Path:
    """An HF folder for the base; a GGUF is dequantized once and saved as plain float32 weights.

    transformers marks a model loaded from GGUF as quantized and refuses to train it, although its
    weights are already dequantized, so the saved copy drops that marker."""
    if not is_gguf(base):
        return Path(base)
    if not (folder / "config.json").exists():
        model, tokenizer = load_base(base)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return folder


def choose_backend() -> str:
    """'unsloth' only with CUDA and an importable unsloth; 'peft' otherwise."""
    import torch

    if not torch.cuda.is_available():
        return "peft"
    os.environ.setdefault("UNSLOTH_DISABLE_CPU_FALLBACK", "1")
    try:
        import unsloth  # noqa: F401  (must precede transformers/trl use to patch them)
    except Exception as exc:  # not installed, or refuses this GPU
        log.warning("unsloth unavailable (%s); using PEFT + TRL", exc)
        return "peft"
    return "unsloth"


def _unsloth_model(base_dir: str | Path, config: TrainConfig):
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=str(base_dir), max_seq_length=config.max_length, load_in_4bit=False)
    model = FastLanguageModel.get_peft_model(
        model, r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.target_modules, bias="none", random_state=config.seed,
        use_gradient_checkpointing="unsloth")
    return model, tokenizer, None


def _peft_model(base: str | Path, config: TrainConfig):
    from peft import LoraConfig

    model, tokenizer = load_base(base)
    layers = model.config.num_hidden_layers
    only = list(range(layers - config.lora_layers, layers)) if 0 < config.lora_layers < layers else None
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=config.target_modules, layers_to_transform=only, task_type="CAUSAL_LM")
    return model, tokenizer, lora


def trainer_class():
    """TRL's SFTTrainer, or, where its fused-loss kernel cannot load (it needs Triton, absent from
    CPU builds of torch), a subclass with the plain causal-LM loss, as TRL advises (override
    compute_loss). The collator already masks prompt tokens in `labels`, so the loss stays
    completion-only."""
    import importlib.util

    from transformers import Trainer
    from trl import SFTTrainer

    if importlib.util.find_spec("triton") is not None:
        return SFTTrainer

    class PlainLossSFTTrainer(SFTTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs["use_cache"] = False
            return Trainer.compute_loss(self, model, inputs, return_outputs, num_items_in_batch)

    return PlainLossSFTTrainer


def progress_callback(config: TrainConfig):
    """A TrainerCallback that shows steps with rate, ETA and the latest losses (amlc.llm.progress)
    and stops training once the config's time budget is spent."""
    from transformers import TrainerCallback

    from .progress import Progress

    class BudgetProgress(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.started, self.steps = time.monotonic(), 0  # this session's (a resumed run restarts the clock)
            self.progress = Progress("train", state.max_steps, unit="steps").start()
            if config.max_minutes:  # the ETA counts max_steps; the budget may stop it sooner
                self.progress.info["stops after"] = f"{config.max_minutes:g} min"
            self.progress.advance(state.global_step)  # a resumed run starts part way

        def on_step_end(self, args, state, control, **kwargs):
            self.progress.advance()
            self.steps += 1
            elapsed = time.monotonic() - self.started
            step = elapsed / self.steps
            # Stop once under two steps' time is left: the last held-out evaluation then still fits.
            if config.max_minutes and elapsed + 2 * step >= config.max_minutes * 60:
                log.info("time budget of %s min reached at step %d", config.max_minutes, state.global_step)
                control.should_training_stop = True
                control.should_evaluate = bool(config.eval_rows)

        def on_log(self, args, state, control, logs=None, **kwargs):
            shown = {k: round(v, 4) for k, v in (logs or {}).items() if k in ("loss", "eval_loss")}
            self.progress.info.update(shown)

        def on_train_end(self, args, state, control, **kwargs):
            self.progress.close()

    return BudgetProgress()


def warmup_steps(config: TrainConfig) -> int:
    """The warm-up as whole steps: every transformers version reads an int the same way (4.x
    took a float warmup_steps as that many steps, 5.x below 1 as a share of the run)."""
    return math.ceil(config.warmup_ratio * config.max_steps)


def sft_args(out: Path, config: TrainConfig, cpu: bool):
    from trl import SFTConfig

    evaluate = ({"eval_strategy": "steps", "eval_steps": config.eval_steps, "eval_on_start": True}
                if config.eval_rows else {})
    return SFTConfig(**evaluate,
        output_dir=str(out / "checkpoints"), max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.learning_rate, warmup_steps=warmup_steps(config),
        lr_scheduler_type=config.lr_scheduler, weight_decay=config.weight_decay,
        logging_steps=config.logging_steps, save_steps=config.save_steps,
        save_total_limit=config.save_total_limit, seed=config.seed, max_length=config.max_length,
        completion_only_loss=True, packing=False, report_to="none", use_cpu=cpu,
        bf16=not cpu, fp16=False,  # TRL defaults to bf16 autocast, ~30x slower on CPUs without AMX
        dataloader_num_workers=0, disable_tqdm=True)


def load_rows(data: str | Path, limit: int | None = None):
    """The JSONL as a datasets.Dataset with only prompt/completion (TRL's prompt-completion form)."""
    from datasets import load_dataset

    dataset = load_dataset("json", data_files=str(data), split="train")
    if limit is not None:
        dataset = dataset.select(range(min(limit, len(dataset))))
    return dataset.remove_columns([c for c in dataset.column_names if c not in ("prompt", "completion")])


def learning_curve(log_history: list[dict]) -> list[dict]:
    """Training and held-out losses by step, from the trainer's log history."""
    by_step: dict[int, dict] = {}
    for entry in log_history:
        for key in ("loss", "eval_loss"):
            if key in entry:
                by_step.setdefault(entry["step"], {"step": entry["step"]})[key] = round(entry[key], 4)
    return [by_step[s] for s in sorted(by_step)]


def format_curve(curve: list[dict]) -> str:
    lines = ["step  train loss  held-out loss"]
    for point in curve:
        train, held = point.get("loss"), point.get("eval_loss")
        lines.append(f"{point['step']:>4}  {'' if train is None else f'{train:10.4f}':>10}  "
                     f"{'' if held is None else f'{held:13.4f}':>13}")
    return "\n".join(lines)


def train(base: str | Path, data: str | Path, out: str | Path, config: TrainConfig | None = None,
          resume: bool = False, eval_data: str | Path | None = None) -> TrainResult:
    """LoRA-train base on the SFT JSONL; the adapter lands in OUT/adapter. Resumes from the
    newest checkpoint under OUT/checkpoints when resume is set and one exists. With eval_data and
    config.eval_rows, the loss on that many held-out rows is measured every config.eval_steps."""
    import torch

    config = config or TrainConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    backend = choose_backend()  # before anything imports transformers: Unsloth patches it on import
    log.info("LoRA backend: %s", backend)
    from transformers import PrinterCallback
    from transformers.trainer_utils import get_last_checkpoint

    if backend != "unsloth":
        torch.set_num_threads(config.threads)  # shared CPU cores: one thread is fastest
    base_dir = materialize_base(base, out / "base_hf")
    make = _unsloth_model if backend == "unsloth" else _peft_model
    model, tokenizer, lora = make(base_dir, config)
    held_out = load_rows(eval_data, config.eval_rows) if eval_data and config.eval_rows else None
    trainer = trainer_class()(model=model, args=sft_args(out, config if held_out else replace(config, eval_rows=0),
                                                         cpu=backend != "unsloth"),
                              train_dataset=load_rows(data), eval_dataset=held_out, processing_class=tokenizer,
                              peft_config=lora, callbacks=[progress_callback(config)])
    trainer.remove_callback(PrinterCallback)  # it prints raw log dictionaries; the progress shows them
    checkpoint = get_last_checkpoint(str(out / "checkpoints")) if resume and (out / "checkpoints").is_dir() else None
    started = time.time()
    _write_info(out, base, base_dir, data, config, TrainResult(backend, out / "adapter", 0, None, 0.0), checkpoint)
    output = trainer.train(resume_from_checkpoint=checkpoint)
    adapter = out / "adapter"
    trainer.save_model(str(adapter))
    tokenizer.save_pretrained(str(adapter))
    result = TrainResult(backend, adapter, output.global_step, _last_loss(trainer), time.time() - started,
                         learning_curve(trainer.state.log_history))
    _write_info(out, base, base_dir, data, config, result, checkpoint)
    return result


def _last_loss(trainer) -> float | None:
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    return losses[-1] if losses else None


def _write_info(out: Path, base, base_dir: Path, data, config: TrainConfig, result: TrainResult,
                resumed: str | None) -> None:
    info = {"backend": result.backend, "finished": result.steps > 0, "base": str(Path(base).resolve()),
            "base_dir": str(base_dir.resolve()), "data": str(Path(data).resolve()),
            "config": asdict(config), "steps": result.steps, "final_loss": result.final_loss,
            "seconds": round(result.seconds, 1), "resumed_from": resumed, "curve": result.curve}
    (out / "train_info.json").write_text(json.dumps(info, indent=2))
    copy_origin(Path(data).parent, out / ORIGIN)  # what the rows came from, for the GGUF


def read_info(out: str | Path) -> dict:
    return json.loads((Path(out) / "train_info.json").read_text())
