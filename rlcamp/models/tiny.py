"""Tiny tokenizers (and, later, tiny models) built offline, for tests and benchmarks.

The tokenizer is byte-level BPE trained in milliseconds on a small built-in corpus, with a
ChatML chat template, so any text round-trips and prompts look like a real chat model's.
"""

from __future__ import annotations

from pathlib import Path

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
_CORPUS = [
    "What is 3 + 4? Let's think step by step and output the final answer after \"####\". #### 7",
    "The answer is 42. Natalia sold 48 clips in April and 24 in May, 72 altogether.",
    "user assistant system You are a helpful assistant. Write the final answer after ####.",
    "0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 + - * / = ( ) \\boxed{} \\frac{1}{2}",
    "the quick brown fox jumps over the lazy dog, THE QUICK BROWN FOX JUMPS OVER THE LAZY DOG.",
]


def build_tiny_tokenizer(save_dir: str | Path | None = None, vocab_size: int = 400):
    """A PreTrainedTokenizerFast with pad=<|endoftext|>, eos=<|im_end|> and a ChatML template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=None, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", unk_token=None)
    fast.chat_template = CHATML_TEMPLATE
    if save_dir is not None:
        fast.save_pretrained(str(save_dir))
    return fast
