"""Tiny tokenizers and tiny models of every supported family, built offline, for tests and benchmarks.

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


PLAIN_TEMPLATE = ("{% for message in messages %}{{ message['role'] | capitalize }}: {{ message['content'] }}\n"
                  "{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}")


def build_tiny_tokenizer(save_dir: str | Path | None = None, vocab_size: int = 400, chat_template: str = CHATML_TEMPLATE):
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
    fast.chat_template = chat_template
    if save_dir is not None:
        fast.save_pretrained(str(save_dir))
    return fast


def _family_config(family: str, vocab_size: int, pad_token_id: int, eos_token_id: int):
    """A few-hundred-KB random config per model family (two layers, hidden 32)."""
    from transformers import AutoConfig

    common = dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                  pad_token_id=pad_token_id, eos_token_id=eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    families = {
        "llama": dict(model_type="llama"),  # the DeepSeek-LLM family is Llama-architecture
        "qwen2": dict(model_type="qwen2"),
        "qwen3": dict(model_type="qwen3", head_dim=8),
        "gemma2": dict(model_type="gemma2", head_dim=8, sliding_window=64, query_pre_attn_scalar=8),
        "qwen2_moe": dict(model_type="qwen2_moe", num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16,
                          shared_expert_intermediate_size=32, output_router_logits=True, router_aux_loss_coef=0.01),
        "deepseek_v3": dict(model_type="deepseek_v3", n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1,
                            moe_intermediate_size=16, first_k_dense_replace=1, n_group=2, topk_group=1,
                            q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8,
                            head_dim=4, rope_scaling=None, num_key_value_heads=4),  # MLA: no grouped KV
    }
    if family not in families:
        raise ValueError(f"unknown tiny model family '{family}'; known: {sorted(families)}")
    settings = dict(common, **families[family])
    return AutoConfig.for_model(settings.pop("model_type"), **settings)


TINY_FAMILIES = ("llama", "qwen2", "qwen3", "gemma2", "qwen2_moe", "deepseek_v3")


def build_tiny_model(save_dir: str | Path, family: str = "qwen2", seed: int = 0, reward_model: bool = False,
                     **config_overrides) -> Path:
    """Save a random tiny causal LM of ``family`` plus the tiny tokenizer into ``save_dir``.

    ``config_overrides`` change the config (vLLM's CPU attention, for one, needs head sizes of 32+).

    ``reward_model=True`` saves a one-output sequence classifier instead, with a different
    tokenizer (vocabulary size and plain "User: / Assistant:" template), as an RM from another
    family would have."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    save_dir = Path(save_dir)
    tokenizer = build_tiny_tokenizer(save_dir, **({"vocab_size": 300, "chat_template": PLAIN_TEMPLATE}
                                                  if reward_model else {}))
    config = _family_config(family, len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    n_layers, types = config.num_hidden_layers, getattr(config, "layer_types", None)
    if types and len(types) != n_layers and "layer_types" not in config_overrides:  # the pattern, to the new depth
        config.layer_types = [types[i % len(types)] for i in range(n_layers)]
    torch.manual_seed(seed)
    if reward_model:
        config.num_labels = 1
        model = AutoModelForSequenceClassification.from_config(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(save_dir, safe_serialization=True)
    return save_dir
