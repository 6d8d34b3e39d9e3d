"""The LLM path on a CPU, for real: a tiny Llama built and trained here, LoRA, merge, GGUF,
quantization, grammar-constrained llama.cpp answers. Fast tests first; the chain is `slow`.

The chain needs llama.cpp's converter in the cache (bin/fetch-models, part of set-up).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import shutil
import sys
from collections import Counter
from pathlib import Path

import pytest
from click.testing import CliRunner

from amlc.cli.llm import export_model, score_model_on_text, sft_data, tiny_model, train
from amlc.extract import Extractor
from amlc.extract.data import OCR_LABELED, TextRow, read_text_rows
from amlc.llm.choice import (ChoiceItem, Options, Scored, combine, combined_answer, fit_weight,
                             model_choice, rule_options, save_weight, writable)
from amlc.llm.grammar import GrammarError, all_grammars, choice_grammar, entity_grammar, validate
from amlc.llm.progress import Progress
from amlc.llm.prompt import (ANSWER_PREFIX, PROMPT_END, build_prompt, completion, fragment_rank,
                             select_fragments, unique_items)
from amlc.llm.sft import held_out_for_fit, mix_to_test, read_jsonl, split_rows, to_records
from amlc.llm.lora import CONFIG_DIR, choose_backend, load_config
from amlc.metric import TEST_MIX, classify_error, format_report
from amlc.predict import stage_name
from amlc.units import ENTITY_UNITS, prediction_error

LOGPROB_MARGIN = 0.5  # nats: trained vs untrained mean log-probability of the right answer (measured ~1)
OCR = "PREMIUM QUALITY new pack Net Wt 750 g made in Italy best before 2025 store in a cool dry place"


# --- prompts and SFT rows ---------------------------------------------------------------------

def test_prompt_names_entity_and_candidates_and_ends_on_marker() -> None:
    prompt = build_prompt("item_weight", OCR, candidates=["750.0 gram", "2025.0 gram"])
    assert prompt.startswith("entity: item_weight\ncandidates: 750.0 gram | 2025.0 gram\ntext: ")
    assert "kilogram" not in prompt  # units are the grammars' business, not the prompt's
    assert prompt.endswith(PROMPT_END)


def test_fragments_with_number_and_unit_come_first_and_budget_bites() -> None:
    assert fragment_rank("Net Wt 750 g") == 0
    assert fragment_rank("best before 2025") == 1
    assert fragment_rank("made in Italy") == 2
    chosen = select_fragments(OCR, budget=1000)
    assert "750 g" in chosen[0]
    short = select_fragments(OCR, budget=16)
    assert len(short) < len(chosen) and "750 g" in short[0]


def test_completion_is_the_matching_candidate_as_written_else_the_label_form() -> None:
    row = TextRow("width", "21 cm x 30 cm", "21.0 centimetre")
    assert to_records([row], lambda *_: ["30 centimetre", "21 centimetre"])[0]["completion"] == " 21 centimetre"
    assert to_records([row])[0]["completion"] == ANSWER_PREFIX + "21.0 centimetre"
    volts = TextRow("voltage", "100-240V", "[100.0, 240.0] volt")
    assert to_records([volts])[0]["completion"] == " 240.0 volt"
    assert completion("") == ""


def test_unique_items_maps_duplicates_to_one() -> None:
    items = [("width", "a"), ("depth", "a"), ("width", "a")]
    distinct, index = unique_items(items)
    assert distinct == [("width", "a"), ("depth", "a")] and index == [0, 1, 0]


def test_split_is_disjoint_fixed_and_mix_follows_test_shares() -> None:
    rows = read_text_rows(OCR_LABELED)
    train_rows, val_rows = split_rows(rows)
    assert split_rows(rows) == (train_rows, val_rows)
    assert not {r.image_link for r in train_rows} & {r.image_link for r in val_rows}
    mixed = Counter(r.entity for r in mix_to_test(train_rows, size=1000))
    total = sum(TEST_MIX.values())
    for entity, n in mixed.items():
        assert abs(n / 1000 - TEST_MIX[entity] / total) < 0.01


def test_records_drop_labels_without_a_valid_answer() -> None:
    rows = [TextRow("wattage", OCR, "5 horsepower"), TextRow("item_weight", OCR, "750.0 gram")]
    records = to_records(rows)
    assert [r["completion"] for r in records] == [" 750.0 gram"]


def test_sft_data_command_writes_prompt_completion_jsonl(tmp_path: Path) -> None:
    result = CliRunner().invoke(sft_data, ["--from", str(OCR_LABELED), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    counts = json.loads(result.output)
    train_rows = read_jsonl(tmp_path / "train.jsonl")
    assert len(train_rows) == counts["train"] > 500 and counts["val"] > 500 and counts["fit"] > 100
    assert all(r["prompt"].endswith(PROMPT_END) and r["completion"].startswith(ANSWER_PREFIX) for r in train_rows)
    assert all(prediction_error(r["completion"].strip(), r["entity"]) is None for r in train_rows)
    # Where the label is among the candidates, the target is that candidate exactly as the prompt lists it.
    matched = [r for r in train_rows if any(classify_error(r["entity"], r["truth"], a) is None for a in r["answers"])]
    assert len(matched) > len(train_rows) / 2
    assert all(r["completion"].strip() in r["answers"] for r in matched)
    images = {name: {r["image_link"] for r in read_jsonl(tmp_path / f"{name}.jsonl")} for name in ("train", "fit", "val")}
    assert not images["fit"] & images["train"] and not images["val"] & (images["train"] | images["fit"])


# --- choosing among the rules' candidates -------------------------------------------------------

def test_rule_options_are_the_rankers_answers_as_labels_write_them() -> None:
    extractor = Extractor.load()
    text = "NET WT 1.5 kg (3.3 lb) best before 2025 pack of 3 x 500 g"
    options = rule_options(extractor, "item_weight", text, "")
    assert options.rules == extractor.predict("item_weight", text).text() == options.answers[0]
    assert 2 <= len(options.answers) <= 4 and len(set(options.answers)) == len(options.answers)
    assert all(prediction_error(a, "item_weight") is None for a in options.answers)
    assert list(options.rule_logp) == sorted(options.rule_logp, reverse=True)
    assert sum(math.exp(lp) for lp in options.rule_logp) <= 1.0 + 1e-9  # 'none' keeps the rest
    assert rule_options(extractor, "item_weight", "no numbers here", "") == Options((), (), "")


def test_combine_moves_from_rules_to_model_as_the_weight_grows() -> None:
    options = Options(("2.0 kilogram", "500.0 gram", "3.0 pound"), (-0.2, -1.9, -3.0), "2.0 kilogram")
    model = (-6.0, -0.5, -4.0)  # the model prefers the second option
    assert combine(options, model, 0.0) == "2.0 kilogram"
    assert combine(options, model, 100.0) == "500.0 gram"
    assert combine(options, None, 100.0) == "2.0 kilogram"  # no scores: the rules stand
    assert model_choice(options, Scored(model)) == "500.0 gram"
    assert combined_answer(Options((), (), ""), Scored(None, "7.0 gram"), 1.0) == "7.0 gram"  # the fallback


def test_fit_weight_picks_the_model_only_when_it_helps() -> None:
    options = Options(("2.0 kilogram", "500.0 gram"), (-0.3, -1.4), "2.0 kilogram")
    helps = [("item_weight", "500 gram", options, Scored((-5.0, -0.1)))] * 3 + \
            [("item_weight", "2 kilogram", options, Scored((-0.7, -0.7)))]
    weight, right = fit_weight(helps)
    assert weight > 0 and right[weight] == 4 and right[0.0] == 1
    useless = [("item_weight", "2 kilogram", options, Scored((-5.0, -0.1)))] * 4
    assert fit_weight(useless)[0] == 0.0


def test_choice_grammar_lists_only_the_options_and_refuses_anything_else() -> None:
    grammar = choice_grammar(["21.0 centimetre", "8.5 inch", "1.0 fluid ounce"])
    assert grammar == 'root ::= (" " ("21.0 centimetre" | "8.5 inch" | "1.0 fluid ounce"))?\n'
    for bad in (['21" ::= x'], ["21.0 cm\nroot ::= [0-9]+"], []):
        with pytest.raises(ValueError):
            choice_grammar(bad)
    # a barcode the rules read as a weight is left out of the grammar, not a crash
    options = ["22122020000174 gram", "250.0 gram"]
    assert writable(options) == ["250.0 gram"]
    assert '"22122020000174 gram"' not in choice_grammar(writable(options))


def test_fit_share_is_a_stable_fifth_of_images() -> None:
    train_rows, _ = split_rows(read_text_rows(OCR_LABELED))
    held = [r for r in train_rows if held_out_for_fit(r)]
    assert 0.15 < len(held) / len(train_rows) < 0.25
    assert [held_out_for_fit(r) for r in train_rows] == [held_out_for_fit(r) for r in train_rows]


def test_progress_prints_rate_and_eta_lines_without_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    with Progress("score", total=4, unit="rows", live=False, interval=0.0) as progress:
        for _ in range(4):
            progress.advance(loss=0.5)
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines[0].startswith("score: 1/4 rows, ") and "ETA " in lines[0] and "loss 0.5" in lines[0]
    assert lines[-1].startswith("score: 4/4 rows") and len(lines) == 4  # the total ends it, once


# --- grammars, config, backend ----------------------------------------------------------------

def test_each_entity_grammar_lists_exactly_its_units_with_bounded_digits() -> None:
    for entity, units in ENTITY_UNITS.items():
        grammar = entity_grammar(entity)
        assert grammar.startswith(f'root ::= ("{ANSWER_PREFIX}" number " " unit)?')
        assert "[0-9]{1,7}" in grammar and "+" not in grammar and "*" not in grammar
        assert grammar.count('"') // 2 - 3 == len(units)  # the prefix, " ", "." and one per unit


def test_every_shipped_config_loads_and_unknown_keys_fail(tmp_path: Path) -> None:
    for path in CONFIG_DIR.glob("*.toml"):
        assert load_config(path).max_steps > 0
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rat = 1.0\n")
    with pytest.raises(ValueError, match="learning_rat"):
        load_config(bad)


def test_backend_on_this_machine_is_peft_and_unsloth_stays_unimported() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA machine: the backend may be unsloth")
    assert choose_backend() == "peft"
    assert "unsloth" not in sys.modules


def test_unsloth_is_imported_before_anything_loads_transformers(tmp_path: Path) -> None:
    """On a CUDA machine `amlc train` must import Unsloth first, for it patches transformers and
    TRL as it loads. A stand-in `unsloth` module records whether transformers was already loaded
    when it was imported, in a fresh interpreter that believes it has CUDA."""
    import subprocess
    (tmp_path / "unsloth.py").write_text(
        "import sys\nprint('transformers loaded first:', 'transformers' in sys.modules)\nraise SystemExit(3)\n")
    script = ("import sys, torch\n"
              "torch.cuda.is_available = lambda: True\n"
              f"sys.path.insert(0, {str(tmp_path)!r})\n"
              "from amlc.llm.lora import train\n"
              f"train('base', 'data.jsonl', {str(tmp_path / 'out')!r})\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr[-2000:]
    assert "transformers loaded first: False" in done.stdout


def test_a_llama_cpp_build_without_a_call_amlc_uses_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    import llama_cpp

    from amlc.llm.api import TESTED, LlamaApiError, check_bindings, check_members

    assert llama_cpp.__version__ == TESTED  # what pyproject pins and the tests run on
    check_bindings()
    monkeypatch.delattr(llama_cpp, "llama_memory_seq_rm")
    with pytest.raises(LlamaApiError, match=r"lacks llama_cpp\.llama_memory_seq_rm, which .* "
                                            r"pip install 'llama-cpp-python==0\.3\.36'"):
        check_bindings()

    class Loaded:  # a Llama of a build whose context lost its KV-cache call
        input_ids, n_tokens, context_params, model = [], 0, object(), object()
        _batch = type("Batch", (), {"set_batch": print})()
        _ctx = type("Ctx", (), {"decode": print, "get_logits": print})()

        def eval(self, tokens: list[int]) -> None: ...

    with pytest.raises(LlamaApiError, match=r"lacks Llama\._ctx\.kv_cache_seq_rm,"):
        check_members(Loaded())


def test_the_warm_up_is_whole_steps_every_transformers_version_reads(tmp_path: Path) -> None:
    from amlc.llm.lora import sft_args
    config = load_config(CONFIG_DIR / "smollm2_cpu.toml")   # 200 steps, a warm-up of 5%
    args = sft_args(tmp_path, config, cpu=True)
    assert args.warmup_steps == 10 and isinstance(args.warmup_steps, int)


# --- the chain: tiny model -> LoRA -> merge -> GGUF -> Q8_0 -> llama.cpp ---------------------------

@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from amlc.llm.gguf import converter_dir, to_gguf

    try:
        converter_dir()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("llm")
    runner = CliRunner()
    steps = [
        (tiny_model, [str(root / "tiny"), "--steps", "150"]),
        (sft_data, ["--from", str(OCR_LABELED), "--out", str(root / "sft")]),
        (train, ["--base", str(root / "tiny"), "--data", str(root / "sft" / "train.jsonl"),
                 "--out", str(root / "run"), "--config", "lora_tiny", "--max-steps", "60",
                 "--eval-data", str(root / "sft" / "fit.jsonl")]),
        (train, ["--base", str(root / "tiny"), "--data", str(root / "sft" / "train.jsonl"),
                 "--out", str(root / "run"), "--config", "lora_tiny", "--max-steps", "70", "--resume"]),
        (export_model, [str(root / "run" / "adapter"), "--out", str(root / "export"),
                        "--check", str(root / "sft" / "val.jsonl"), "--check-n", "40"]),
    ]
    outputs = []
    for command, args in steps:
        result = runner.invoke(command, args, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        print(command.name, result.output[-400:])
        outputs.append(result.output)
    untrained = to_gguf(root / "tiny", root / "untrained-f16.gguf")  # the same base, no LoRA
    return {"root": root, "val": root / "sft" / "val.jsonl", "q8": root / "export" / "model-q8_0.gguf",
            "export": root / "export", "untrained": untrained, "train_output": outputs[2]}


@pytest.mark.slow
def test_train_and_export_print_only_their_own_lines_off_a_terminal(chain: dict[str, Path], tmp_path: Path) -> None:
    """The libraries' bars and logs (transformers' loading bar, llama.cpp's quantizer, a line
    per tensor) land in a log beside the outputs, named once; the commands' own progress and
    results stay on stdout and stderr."""
    import subprocess

    def amlc_cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "amlc", *args], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    root = chain["root"]
    trained = amlc_cli("train", "--base", str(root / "tiny"), "--data", str(root / "sft" / "train.jsonl"),
                       "--out", str(tmp_path / "run"), "--config", "lora_tiny", "--max-steps", "4")
    exported = amlc_cli("export-model", str(tmp_path / "run" / "adapter"), "--out", str(tmp_path / "export"),
                        "--quant", "q8_0")
    train_log, export_log = (tmp_path / "run" / "train.log").read_text(), (tmp_path / "export" / "export.log").read_text()
    assert "Loading weights: 100%|" in train_log  # transformers' bar
    assert "%|" not in trained + exported  # no library's bar reaches the user
    assert "converting to q8_0" in export_log and "converting to q8_0" not in exported
    assert f"libraries' output goes to {tmp_path / 'run' / 'train.log'}" in trained
    assert "train: 4/4 steps" in trained and '"steps": 4' in trained  # its own progress and result
    assert "export: " in exported and '"q8_0":' in exported


@pytest.mark.slow
def test_training_resumed_from_its_checkpoint(chain: dict[str, Path]) -> None:
    info = json.loads((chain["root"] / "run" / "train_info.json").read_text())
    assert info["backend"] == "peft" and info["steps"] == 70
    assert info["resumed_from"].endswith("checkpoint-60")


@pytest.mark.slow
def test_training_prints_a_learning_curve_whose_held_out_loss_falls(chain: dict[str, Path]) -> None:
    output = chain["train_output"]
    assert "step  train loss  held-out loss" in output and "{'loss'" not in output  # no raw log dicts
    held_out = [p["eval_loss"] for p in json.loads((chain["root"] / "run" / "train_info.json").read_text())["curve"]
                if "eval_loss" in p]
    print("held-out loss by evaluation:", held_out)
    assert len(held_out) >= 2 and held_out[-1] < held_out[0] - 0.03


def _choice_rows(chain: dict[str, Path], n: int = 150) -> list[dict]:
    """A fixed held-out set: validation rows of the test's own SFT data with two or more options."""
    return [r for r in read_jsonl(chain["val"]) if len(r["answers"]) >= 2][:n]


def _mean_answer_logprob(model: Path, rows: list[dict]) -> float:
    """Mean log-probability the model gives the right answer (as the labels write it) after the prompt."""
    import llama_cpp

    from amlc.llm.score import continuation_logprobs

    llm = llama_cpp.Llama(str(model), n_ctx=1024, verbose=False)
    return sum(continuation_logprobs(llm, r["prompt"], [r["completion"]])[0] for r in rows) / len(rows)


@pytest.mark.slow
def test_trained_model_beats_the_same_model_untrained_on_held_out_rows(chain: dict[str, Path]) -> None:
    rows = _choice_rows(chain)
    trained, untrained = _mean_answer_logprob(chain["q8"], rows), _mean_answer_logprob(chain["untrained"], rows)
    print(f"mean log P(right answer) on {len(rows)} held-out rows: trained {trained:.3f}, untrained {untrained:.3f}")
    assert len(rows) == 150 and trained >= untrained + LOGPROB_MARGIN


@pytest.mark.slow
def test_choice_grammar_never_yields_an_answer_outside_the_options(chain: dict[str, Path]) -> None:
    from amlc.llm.choice import grammar_choice
    from amlc.llm.infer import load_llama

    engine = load_llama(str(chain["untrained"]), check=False)  # the weaker model strays more
    rows = _choice_rows(chain, 60)
    free = [engine.generate(r["prompt"], r["entity"]).strip() for r in rows]
    chosen = [grammar_choice(engine, ChoiceItem(r["entity"], r["prompt"], tuple(r["answers"]))).written for r in rows]
    print(f"outside the options: entity grammar {sum(a not in r['answers'] for a, r in zip(free, rows))}/60, "
          f"choice grammar {sum(a not in r['answers'] for a, r in zip(chosen, rows))}/60")
    assert any(a and a not in r["answers"] for a, r in zip(free, rows))  # so the check below can fail
    assert all(a == "" or a in r["answers"] for a, r in zip(chosen, rows))
    assert sum(bool(a) for a in chosen) > 30


@pytest.mark.slow
def test_option_scores_equal_a_full_evaluation_of_each_continuation(chain: dict[str, Path]) -> None:
    import llama_cpp

    from amlc.llm.score import continuation_logprobs

    llm = llama_cpp.Llama(str(chain["q8"]), n_ctx=1024, verbose=False)
    full = llama_cpp.Llama(str(chain["q8"]), n_ctx=1024, logits_all=True, verbose=False)
    for r in _choice_rows(chain, 5) * 2:  # the second pass reuses the cached prompts
        conts = [ANSWER_PREFIX + a for a in r["answers"]]
        got = continuation_logprobs(llm, r["prompt"], conts)
        for text, value in zip(conts, got):
            head = full.tokenize(r["prompt"].encode(), add_bos=True, special=True)
            tail = full.tokenize(text.encode(), add_bos=False) + [full.token_eos()]
            full.reset()
            full.eval(head + tail[:-1])
            logp = full.logits_to_logprobs(full.scores[: len(head) + len(tail) - 1])
            assert value == pytest.approx(sum(logp[len(head) - 1 + i, t] for i, t in enumerate(tail)), abs=1e-3)


@pytest.mark.slow
def test_quantized_models_agree_with_the_merged_model(chain: dict[str, Path]) -> None:
    agreement = json.loads((chain["export"] / "export.json").read_text())["agreement"]
    print("agreement with merged PyTorch greedy:", agreement)
    assert agreement["f16"] >= 0.9
    assert agreement["q8_0"] >= 0.8
    assert agreement["q4_k_m"] >= 0.6  # 4-bit on a 3M model: 0.975-1.0 measured; a broken quantizer is far below
    assert (chain["export"] / "model-q4_k_m.gguf").stat().st_size < (chain["export"] / "model-q8_0.gguf").stat().st_size


@pytest.mark.slow
def test_llama_cpp_tokenizes_prompts_like_training(chain: dict[str, Path]) -> None:
    import llama_cpp
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(chain["export"] / "merged")
    llm = llama_cpp.Llama(str(chain["q8"]), vocab_only=True, verbose=False)
    for row in read_jsonl(chain["val"])[:50]:
        ids = tokenizer(row["prompt"])["input_ids"]
        assert llm.tokenize(row["prompt"].encode(), add_bos=True, special=False) == ids
        assert tokenizer(row["prompt"] + row["completion"])["input_ids"][: len(ids)] == ids  # token boundary


@pytest.mark.slow
def test_grammars_load_and_a_malformed_one_is_caught_not_crashing(chain: dict[str, Path]) -> None:
    validate(str(chain["q8"]), all_grammars())
    with pytest.raises(GrammarError):
        validate(str(chain["q8"]), {"broken": 'root ::= ("x" | '})


@pytest.mark.slow
def test_predictions_are_all_valid_and_duplicates_answered_alike(chain: dict[str, Path]) -> None:
    from amlc.llm.infer import predict_texts

    rows = read_jsonl(chain["val"])[:120]
    items = [(r["entity"], r["prompt"]) for r in rows]
    answers = predict_texts(str(chain["q8"]), items + items[:10])
    assert all(prediction_error(a, e) is None for a, (e, _) in zip(answers, items + items[:10]))
    assert answers[-10:] == answers[:10]
    exact = sum(a == r["completion"].strip() for a, r in zip(answers, rows)) / len(rows)
    answered = sum(bool(a) for a in answers[:len(rows)])
    print(f"tiny model exact on {len(rows)} validation rows: {exact:.1%}; non-blank: {answered}")
    assert answered >= 100  # valid cells, not blanks (120 of 120 measured): the grammar holds them


@pytest.mark.slow
def test_score_model_on_text_reports_f1(chain: dict[str, Path]) -> None:
    report = score_model_on_text(chain["q8"], OCR_LABELED, "val", limit=150)
    print(format_report(report))
    counts = report.numeric
    assert counts.tp + counts.fp + counts.fn + counts.tn == 150
    assert report.errors.get("invalid prediction", 0) == 0
    assert report.f1 > 0.3  # its choices score (0.64 measured); a model that always abstains scores 0


@pytest.mark.slow
def test_eval_text_scores_a_gguf_model_with_the_f1_line(chain: dict[str, Path], tmp_path: Path) -> None:
    from amlc.cli.extract import eval_text_command

    rows = OCR_LABELED.read_text().splitlines()
    small = tmp_path / "small.csv"
    small.write_text("\n".join(rows[:1] + rows[1:31]) + "\n")
    written = {}
    for name in ("q8", "untrained"):  # two models: --model must make the answers theirs
        out = tmp_path / f"{name}.csv"
        result = CliRunner().invoke(eval_text_command, [str(small), "--split", "all", "--model", str(chain[name]),
                                                        "--predictions", str(out)], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        assert result.output.strip().splitlines()[-1].startswith("f1=")
        written[name] = list(csv.DictReader(out.open()))
        assert len(written[name]) == 30
        assert all(prediction_error(r["prediction"], r["entity_name"]) is None for r in written[name])
    assert [r["prediction"] for r in written["q8"]] != [r["prediction"] for r in written["untrained"]]


def _store_with_rules(tmp_path: Path, n: int) -> Path:
    """A store whose first n ocr_labeled.csv rows (split 'val') hold their real OCR text, as one
    line each, and the rules' answers; returns the labelled CSV."""
    import csv as csvlib
    import time

    from store_helpers import amlc, execute, query

    from amlc.ocr import OcrLine, OcrResult

    rows = list(csvlib.DictReader(OCR_LABELED.open()))[:n]
    labelled = tmp_path / "val.csv"
    with labelled.open("w", newline="") as handle:
        writer = csvlib.writer(handle)
        writer.writerow(["index", "image_link", "group_id", "entity_name", "entity_value"])
        writer.writerows([i, r["image_link"], r["group_id"], r["entity_name"], r["entity_value"]]
                         for i, r in enumerate(rows))
    amlc(tmp_path, "ingest", str(labelled), "--split", "val")
    store = tmp_path / "amlc.db"
    texts = {r["image_link"]: r["ocr_text"] for r in rows}
    results = {link: OcrResult([OcrLine(text, 1.0, ((0, 0), (1, 0), (1, 1), (0, 1)))], "rapidocr")
               for link, text in texts.items()}
    execute(store, "INSERT INTO ocr_results(image_id, engine, lines, text, preprocess, created_at) "
                   "SELECT id, 'rapidocr', ?, ?, '{}', ? FROM images WHERE link = ?",
            [(r.to_json(), r.text(), time.time(), link) for link, r in results.items()])
    execute(store, "UPDATE jobs SET state = 'done' WHERE stage = 'fetch' AND item_id = ?",
            [(i,) for (i,) in query(store, "SELECT id FROM images")])
    execute(store, "UPDATE jobs SET state = 'done' WHERE stage = 'ocr'", [()])
    amlc(tmp_path, "run", "--stages", "extract", "--exit-when-done", "--no-dashboard")
    return labelled


@pytest.mark.slow
def test_predict_stage_answers_stored_samples_and_resumes(chain: dict[str, Path], tmp_path: Path) -> None:
    """Labelled samples with real OCR text in the store -> rules -> `amlc predict` -> export/check/eval."""
    from store_helpers import amlc, query

    labelled = _store_with_rules(tmp_path, 25)
    store = tmp_path / "amlc.db"
    counts = json.loads(amlc(tmp_path, "sft-data", "--split", "val", "--out", str(tmp_path / "sft")).output)
    assert counts["train"] + counts["fit"] + counts["val"] == 25
    assert all(json.loads(line)["prompt"].endswith(PROMPT_END)
               for line in (tmp_path / "sft" / "val.jsonl").read_text().splitlines())
    model = tmp_path / "it's tiny.gguf"   # a quote in the name: names reach SQL as data only
    shutil.copyfile(chain["q8"], model)
    save_weight(model, 0.0, {}, 0)  # rules+model with weight 0 must give the rules' answers
    amlc(tmp_path, "predict", "--model", str(model), "--split", "val", "--no-dashboard")
    stage = stage_name(model)
    assert stage.startswith(f"predict:{model.stem}@")
    assert query(store, "SELECT state, count(*) FROM jobs WHERE stage = ? GROUP BY 1", (stage,)) == [("done", 25)]
    first = query(store, "SELECT sample_id, prediction, created_at FROM predictions WHERE source = ?", (model.stem,))
    assert len(first) == 25
    by_source = {source: dict(query(store, "SELECT sample_id, prediction FROM predictions WHERE source = ?",
                                    (source,))) for source in ("rules", f"rules+{model.stem}")}
    assert len(by_source[f"rules+{model.stem}"]) == 25
    assert all(by_source[f"rules+{model.stem}"][i] == answer for i, answer in by_source["rules"].items() if answer)
    own = dict(query(store, "SELECT sample_id, prediction FROM predictions WHERE source = ?", (model.stem,)))
    # the model's own choice is its scoring's, not the rules' first option (8 of 25 differ, measured)
    assert any(own[i] != answer for i, answer in by_source["rules"].items())
    amlc(tmp_path, "predict", "--model", str(model), "--split", "val", "--no-dashboard")
    assert query(store, "SELECT sample_id, prediction, created_at FROM predictions WHERE source = ?",
                 (model.stem,)) == first  # nothing answered twice
    out = tmp_path / "sub.csv"
    amlc(tmp_path, "export", str(out), "--split", "val")
    assert amlc(tmp_path, "check", str(out), "--against", str(labelled)).exit_code == 0
    assert amlc(tmp_path, "eval", "--split", "val").output.strip().splitlines()[-1].startswith("f1=")


def model_answered(store: Path, source: str = "tiny") -> set[int]:
    """The samples whose answer from `source` export and eval would use now."""
    import asyncio

    import aiosqlite

    from amlc.export import best_answers

    async def go() -> set[int]:
        async with aiosqlite.connect(store) as conn:
            conn.row_factory = aiosqlite.Row
            return {a.sample_id for a in await best_answers(conn, "val", (source,), only=True) if a.source}
    return asyncio.run(go())


@pytest.mark.slow
def test_a_model_answer_made_from_text_the_store_no_longer_holds_is_made_again(
        chain: dict[str, Path], tmp_path: Path) -> None:
    """A model answered 6 samples; then one image is read anew (new text) and another sample's
    rules answer came from an older ranker. Until the model answers them again, export and eval
    pass over its two out-of-date answers (the rules' stand); the next `amlc predict` remakes
    exactly those two."""
    import time

    from store_helpers import amlc, execute, query

    from amlc.ocr import OcrLine, OcrResult

    labelled = _store_with_rules(tmp_path, 6)
    store = tmp_path / "amlc.db"
    model = tmp_path / "tiny.gguf"
    shutil.copyfile(chain["q8"], model)
    amlc(tmp_path, "predict", "--model", str(model), "--split", "val", "--no-dashboard")
    stage = stage_name(model)
    first = dict(query(store, "SELECT sample_id, created_at FROM predictions WHERE source = 'tiny'"))
    (reread, image), (reranked, _) = query(store, "SELECT id, image_id FROM samples ORDER BY id LIMIT 2")
    new_text = OcrResult([OcrLine("NET WT 250 g", 1.0, ((0, 0), (1, 0), (1, 1), (0, 1)))], "rapidocr")
    execute(store, "INSERT OR REPLACE INTO ocr_results(image_id, engine, lines, text, preprocess, created_at) "
                   "VALUES (?, 'rapidocr', ?, ?, '{}', ?)", [(image, new_text.to_json(), new_text.text(), time.time())])
    # the image's samples are made stale as a new reading makes them (OCR done again)
    execute(store, "UPDATE jobs SET state = 'pending' WHERE stage = 'ocr' AND item_id = ?", [(image,)])
    execute(store, "UPDATE jobs SET state = 'done' WHERE stage = 'ocr' AND item_id = ?", [(image,)])
    execute(store, "UPDATE predictions SET detail = json_set(detail, '$.ranker', 'older') "
                   "WHERE sample_id = ? AND source = 'rules'", [(reranked,)])

    everyone = set(first)
    assert model_answered(store) == everyone - {reread}  # its reading is gone: so is its answer
    amlc(tmp_path, "run", "--stages", "extract", "--exit-when-done", "--no-dashboard")
    pending = {i for (i,) in query(store, "SELECT item_id FROM jobs WHERE stage = ? AND state = 'pending'", (stage,))}
    assert pending == {reread, reranked}
    assert model_answered(store) == everyone - {reread, reranked}  # the rules answered them anew
    exported = tmp_path / "sub.csv"
    amlc(tmp_path, "export", str(exported), "--split", "val", "--source", "tiny")
    rules = dict(query(store, "SELECT sample_id, prediction FROM predictions WHERE source = 'rules'"))
    written = {int(r["index"]): r["prediction"] for r in csv.DictReader(exported.open())}
    assert written[0] == rules[reread] and written[1] == rules[reranked]
    amlc(tmp_path, "predict", "--model", str(model), "--split", "val", "--no-dashboard")
    assert model_answered(store) == everyone
    again = dict(query(store, "SELECT sample_id, created_at FROM predictions WHERE source = 'tiny'"))
    assert {i for i in again if again[i] != first[i]} == {reread, reranked}
    made = json.loads(query(store, "SELECT detail FROM predictions WHERE sample_id = ? AND source = 'tiny'",
                            (reread,))[0][0])
    assert made["text_sha1"] == hashlib.sha1(b"NET WT 250 g").hexdigest()[:12] and made["ocr"] == "rapidocr"
    assert amlc(tmp_path, "check", str(exported), "--against", str(labelled)).exit_code == 0


@pytest.mark.slow
def test_eval_marks_a_model_on_rows_it_learned_from_and_export_does_not_choose_on_them(
        chain: dict[str, Path], tmp_path: Path) -> None:
    """The chain's GGUF carries what its SFT rows came from. Two copies answer a labelled split:
    one as if trained on that split (its SFT data made from it by `amlc sft-data --split`), one
    on the very file the split was ingested from. `amlc eval` counts, for each, the split's rows
    in the training half of the split by image, prints the score marked, and `amlc export`
    leaves both out of its choice and says so."""
    from store_helpers import amlc, amlc_json

    from amlc.extract.data import in_validation
    from amlc.llm.origin import copy_origin, data_origin, model_origin, model_origin_path, write_origin

    assert model_origin(chain["q8"]) == data_origin([OCR_LABELED], None, [], 0)  # written by export-model
    labelled = _store_with_rules(tmp_path, 25)
    amlc(tmp_path, "sft-data", "--split", "val", "--out", str(tmp_path / "sft"))
    by_split, by_file = tmp_path / "by-split.gguf", tmp_path / "by-file.gguf"
    for model in (by_split, by_file):
        shutil.copyfile(chain["q8"], model)
    copy_origin(tmp_path / "sft", model_origin_path(by_split))
    write_origin(tmp_path / "file-origin", data_origin([labelled], None, [], 0))
    copy_origin(tmp_path / "file-origin", model_origin_path(by_file))
    for model in (by_split, by_file):
        amlc(tmp_path, "predict", "--model", str(model), "--split", "val", "--no-dashboard")

    with labelled.open(newline="") as handle:
        trained = sum(not in_validation(row) for row in csv.DictReader(handle))
    assert 0 < trained < 25
    scored = amlc_json(tmp_path, "eval", "--split", "val")["by_source"]
    assert {s: v["learned_rows"] for s, v in scored.items()} == {
        "rules": 0, "by-split": trained, "rules+by-split": trained, "by-file": trained, "rules+by-file": trained}
    printed = amlc(tmp_path, "eval", "--split", "val").output
    assert f"trained or fitted on {trained} of these rows: not evidence for export" in printed
    said = amlc(tmp_path, "export", str(tmp_path / "sub.csv"), "--split", "val").output
    assert "answers from 'rules'" in said
    assert "not counted: by-file, by-split, rules+by-file, rules+by-split, trained or fitted" in said


@pytest.mark.slow
def test_two_llm_workers_answer_like_one(chain: dict[str, Path], tmp_path: Path, image_server) -> None:
    """`amlc predict --llm-workers 2` (two processes) stores exactly the answers of one worker."""
    import shutil

    from http_server import DEFAULT_ROOT
    from store_helpers import amlc, query, write_csv

    names = sorted(p.name for p in DEFAULT_ROOT.glob("*.jpg"))[200:212]
    entities = sorted(ENTITY_UNITS)
    rows = [[i, image_server.url(f"/images/I/{name}"), "1", entities[i % len(entities)]]
            for i, name in enumerate(names)]
    one, two = tmp_path / "one", tmp_path / "two"
    amlc(one, "ingest", str(write_csv(tmp_path / "in.csv", ["index", "image_link", "group_id", "entity_name"],
                                      rows + [[12 + i, *row[1:]] for i, row in enumerate(rows)])), "--split", "t")
    amlc(one, "run", "--exit-when-done", "--no-dashboard")  # real OCR and rules
    shutil.copytree(one, two)
    answers = []
    for folder, workers in ((one, "1"), (two, "2")):
        amlc(folder, "predict", "--model", str(chain["q8"]), "--no-fallback", "--no-dashboard",
             "--llm-workers", workers)
        answers.append(query(folder / "amlc.db", "SELECT s.idx, p.prediction FROM predictions p "
                                                 "JOIN samples s ON s.id = p.sample_id "
                                                 "WHERE p.source = ? ORDER BY s.idx", (chain["q8"].stem,)))
    assert len(answers[0]) == 24 and sum(bool(a) for _, a in answers[0]) > 0
    assert answers[1] == answers[0]


@pytest.mark.slow
def test_gpu_layers_reach_llama(chain: dict[str, Path], tmp_path: Path) -> None:
    """--gpu-layers ends as llama.cpp's n_gpu_layers: -1 is all, the default all when it can offload."""
    import asyncio
    from contextlib import AsyncExitStack

    import llama_cpp

    from amlc.llm.infer import LlmSpec, load_llama
    from amlc.pipeline import RunConfig, _build_stages
    from amlc.workdir import Workdir

    def layers(engine) -> int:
        return engine.llm.model_params.n_gpu_layers

    everything = layers(load_llama(str(chain["q8"]), check=False, gpu_layers=-1))
    assert everything == 0x7FFFFFFF  # llama-cpp-python's spelling of "every layer"
    default = layers(LlmSpec(str(chain["q8"])).build().args[0])
    assert default == (everything if llama_cpp.llama_supports_gpu_offload() else 0)

    async def predict_stage_layers() -> int:  # the option as `amlc predict --gpu-layers 3` passes it
        config = RunConfig(stages=("predict",), model=chain["q8"], llm_workers=0, gpu_layers=3)
        async with AsyncExitStack() as stack:
            [stage] = await _build_stages(config, Workdir(tmp_path), stack)
            return layers(stage.pool.handler.args[0])

    assert asyncio.run(predict_stage_layers()) == 3


@pytest.mark.slow
def test_rows_decoded_together_answer_like_one_by_one(chain: dict[str, Path]) -> None:
    """amlc.llm.parallel (8 rows per llama_decode, a grammar each) answers as create_completion does."""
    from amlc.llm.infer import answer_items, load_llama

    items = [(r["entity"], r["prompt"]) for r in read_jsonl(chain["val"])[:40]]
    one_by_one = answer_items(load_llama(str(chain["q8"]), check=False), items)
    together = load_llama(str(chain["q8"]), check=False, parallel=8)
    assert together.parallel is not None
    assert answer_items(together, items) == one_by_one
    assert sum(bool(a) for a in one_by_one) > 0


@pytest.mark.slow
def test_rows_scored_together_score_like_one_by_one(chain: dict[str, Path]) -> None:
    """amlc.llm.batch_score: the rows' options as predict sends them (ChoiceItems), scored 8 rows
    to a round, get exactly the log-probabilities one-by-one scoring gives (options of unequal
    length included, which llama.cpp would otherwise split into one-token steps)."""
    from amlc.llm.infer import answer_items, load_llama

    items = [ChoiceItem(r["entity"], r["prompt"], tuple(r["answers"])) for r in read_jsonl(chain["val"])[:40]]
    scored = [item for item in items if len(item.answers) > 1]
    assert len(scored) >= 10
    one_by_one = answer_items(load_llama(str(chain["q8"]), check=False), items)
    together = load_llama(str(chain["q8"]), check=False, parallel=8)
    assert answer_items(together, items) == one_by_one
    assert together.scorer.rows >= len(scored) and together.scorer.rounds <= together.scorer.rows / 4
    assert len({len(item.answers[0]) for item in scored}) > 1   # options of several lengths


def test_a_scoring_round_fits_its_sequences_and_decodes() -> None:
    """BatchScorer's rounds: at most `width` option sequences, and padding never pushes a
    prompt's options past its sequence's cells (a 480-token prompt with a 40-token option of
    another row would), whatever order the rows come in."""
    from amlc.llm.batch_score import SCORE_CTX, BatchScorer, _Row

    scorer = object.__new__(BatchScorer)   # _round needs only the width, not a model
    scorer.width = 8

    def row(prompt: int, *options: int) -> _Row:
        return _Row(0, [1] * (prompt + 1), [[2] * n for n in options])

    assert len(scorer._round([row(100, 5, 5, 5), row(100, 5, 5, 5), row(100, 5, 5)])) == 3  # 8 sequences
    assert len(scorer._round([row(100, 5, 5, 5), row(100, 5, 5, 5), row(100, 5, 5, 5)])) == 2  # 9 > 8
    assert len(scorer._round([row(480, 8), row(10, 40)])) == 1
    assert len(scorer._round([row(10, 40), row(480, 8)])) == 1
    assert len(scorer._round([row(400, 8), row(10, 40)])) == 2
    assert 400 + 40 <= SCORE_CTX < 480 + 40
