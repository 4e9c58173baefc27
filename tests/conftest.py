"""Shared fixtures: fixed seeds, an isolated cache, no network, and a tiny Llama built here."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

# Set before transformers/huggingface_hub are imported anywhere: the suite never touches the network.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(autouse=True)
def _seeds() -> None:
    random.seed(0)
    np.random.seed(0)
    try:
        import torch
    except ImportError:
        return
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    # the real default model's conversion is reused from the user cache by slow tests only
    if "FORGETSCALE_CACHE" not in os.environ:
        os.environ["FORGETSCALE_CACHE"] = str(tmp_path_factory.mktemp("cache"))


def build_tiny_model(directory: Path, vocab_size: int = 400, seed: int = 0) -> Path:
    """A randomly initialised 2-layer Llama with a small BPE tokenizer and a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from forgetscale.data.corpus import shipped_prompts
    from forgetscale.data.synthetic import generate

    texts = shipped_prompts()
    for name in ("news", "instruct"):
        for ex in generate(name, 60, seed=123):
            texts.append(ex.get("text") or " ".join(m["content"] for m in ex["messages"]))
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    tok.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    tok.save_pretrained(directory)
    return directory


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


TINY_STUDY = [
    "data.n_train=24",
    "data.n_heldout=6",
    "train.steps=8",
    "train.batch_size=4",
    "train.seq_len=64",
    "train.lr=0.01",
    "train.n_evals=4",
    "forgetting.n_prompts=6",
    "forgetting.max_new_tokens=12",
    "fit.n_boot=10",
    # the default preset's schedule, fit window and probe sizes are made for 32 real steps; the tiny
    # studies keep log-spaced evaluations over their 8 steps, fit from step 1 and probe a few items
    "train.eval_steps=null",
    "fit.min_step=1",
    "probes.max_items=4",
    "probes.runs=all",
    # FORGETSCALE_TEST_PRECISION=fp32|bf16|auto runs the tiny studies in that training precision (the
    # suite must pass in each); the default, auto, is what this machine measures faster
    f"train.precision={os.environ.get('FORGETSCALE_TEST_PRECISION', 'auto')}",
    "sweep.data.dataset=[news,instruct]",
    "sweep.lora.rank=[1,4]",
]


@pytest.fixture
def tiny_overrides(tiny_model: Path) -> list[str]:
    """``--set`` overrides for a seconds-long study on the tiny model."""
    return [f"model.name={tiny_model}", *TINY_STUDY]


def count_rows(out: Path) -> int:
    """Measurement rows a (possibly running) study has committed; 0 before its store or schema exists."""
    import sqlite3

    if not (out / "study.sqlite").is_file():
        return 0
    con = sqlite3.connect(out / "study.sqlite", timeout=30)
    try:
        return con.execute("SELECT count(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:  # the file exists, its tables not yet
        return 0
    finally:
        con.close()
