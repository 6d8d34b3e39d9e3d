"""The LLM path: prompts and SFT rows, a tiny offline model, LoRA training, merge + GGUF export,
quantization, and grammar-constrained llama.cpp inference.

Heavy libraries (torch, transformers, peft, trl, llama_cpp) are imported inside the modules that
need them, so `import amlc.llm.prompt` stays cheap.
"""
