"""How big a demo is: what `amlc demo --size` chooses, shared by the demo's steps."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DemoSize:
    """How big a demo is: images per split and how the model is made."""

    train: int
    val: int
    test: int
    base: str                  # "tiny": a tiny Llama built here; "smollm2": SmolLM2-135M from set-up
    config: str                # LoRA config name (amlc/llm/configs)
    max_steps: int | None      # LoRA steps (None: the config's)
    tiny_pretrain: int = 150   # tiny base only: its pre-training steps

    @property
    def counts(self) -> dict[str, int]:
        return {"train": self.train, "val": self.val, "test": self.test}

    @property
    def source(self) -> str:
        """The model's name in the predictions table."""
        return "tiny-lora" if self.base == "tiny" else "smollm2-135m-lora"


SIZES: dict[str, DemoSize] = {
    "tiny": DemoSize(24, 16, 12, "tiny", "lora_tiny", 40, tiny_pretrain=120),
    "small": DemoSize(96, 48, 32, "smollm2", "smollm2_cpu", 20),
    "full": DemoSize(480, 200, 200, "smollm2", "smollm2_cpu", None),
}
