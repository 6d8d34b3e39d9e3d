"""`amlc demo`: a self-contained run of the whole job on synthetic product labels.

    distributions.py   value/unit/group distributions per entity (distributions.json, from train data)
    render.py          product-label images with PIL: fonts, sizes, rotation, blur, noise, clutter
    serve.py           a local aiohttp image server on 127.0.0.1 (ephemeral port)
    llm_steps.py       SFT rows from the store, base, LoRA, GGUF, predict (amlc.predict stage)
    data.py            the rendered dataset and its CSVs
    run.py             the steps, each skipped when the work folder says it is done
"""
