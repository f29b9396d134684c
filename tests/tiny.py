"""A tiny, randomly initialised causal LM and a word-level tokenizer, built locally (no downloads).

The vocabulary holds whole answers (``\\boxed{1}``, ``\\boxed{0.5}``, ...) as single tokens, so
even a random model emits final answers often, and clustering / semantic entropy see real,
varied model output rather than canned strings.
"""

from __future__ import annotations

import os

import torch

ANSWER_TOKENS = [r"\boxed{1}", r"\boxed{2}", r"\boxed{0.5}", r"\boxed{\frac{1}{2}}", r"\boxed{3}", "Answer:"]
WORDS = ["the", "answer", "is", "so", "we", "get", "+", "=", "1", "2", "3", "x", "What", "?", "Solve", ":"]
SPECIAL = ["<pad>", "<eos>", "<unk>"]
CHAT_TEMPLATE = "{% for m in messages %}{{ m['content'] }} {% endfor %}"


def make_tokenizer(path: str | None = None):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIAL + ANSWER_TOKENS + WORDS)}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = WhitespaceSplit()
    from tokenizers.decoders import WordPiece  # joins with spaces

    tok.decoder = WordPiece(prefix="##")
    hf = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    hf.chat_template = CHAT_TEMPLATE
    hf.padding_side = "left"
    if path:
        hf.save_pretrained(path)
    return hf


def make_model(tokenizer, path: str | None = None, seed: int = 0, hidden: int = 32, layers: int = 2):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
    )
    model = Qwen2ForCausalLM(cfg).eval()
    if path:
        os.makedirs(path, exist_ok=True)
        model.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return model
