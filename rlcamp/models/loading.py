"""Loading actor, reference and critic from local HF folders.

The critic is the backbone with a one-output token-classification head (``score``), the same
class verl uses, so a saved critic reloads with plain ``AutoModelForTokenClassification``. The
head starts at zero: the first values are 0, the advantages start as plain returns, and the
head learns from the first update instead of injecting noise into it.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch


class ModelError(RuntimeError):
    pass


def _check_path(path: str, key: str) -> str:
    local = Path(path).expanduser()
    if local.exists():
        return str(local)
    if path.startswith(("~", "/", ".")):
        raise ModelError(f"{key}={path}: folder does not exist. For SmolLM2-135M-Instruct run "
                         "`rlcamp models prepare smollm2-135m-instruct`; any local HF folder works")
    return path  # a hub name: transformers resolves it (online, or from its cache)


def import_external_lib(name: str | None) -> None:
    if name:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ModelError(f"model.external_lib={name} could not be imported: {exc}") from exc


def load_tokenizer(path: str, *, trust_remote_code: bool = False, custom_chat_template: str | None = None,
                   key: str = "actor_rollout_ref.model.path"):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(_check_path(path, key), trust_remote_code=trust_remote_code)
    if custom_chat_template:
        tokenizer.chat_template = custom_chat_template
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def eos_token_ids(tokenizer, model) -> list[int]:
    ids = {tokenizer.eos_token_id}
    generation_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(generation_eos, int):
        ids.add(generation_eos)
    elif generation_eos:
        ids.update(generation_eos)
    return sorted(i for i in ids if i is not None)


def _config(path: str, trust_remote_code: bool, override_config: dict[str, Any], key: str, **extra):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(_check_path(path, key), trust_remote_code=trust_remote_code, **extra)
    for name, value in override_config.items():
        if not hasattr(config, name):
            raise ModelError(f"{key}: override_config.{name} is not a field of {type(config).__name__}")
        setattr(config, name, value)
    if hasattr(config, "quantization_config"):
        raise ModelError(f"{key}={path} is a quantized checkpoint; rlcamp trains full-precision weights "
                         "(convert it first, as `rlcamp models prepare` does for GGUF)")
    return config


def load_causal_lm(path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                   override_config: dict[str, Any] | None = None, key: str = "actor_rollout_ref.model.path"):
    from transformers import AutoModelForCausalLM

    config = _config(path, trust_remote_code, override_config or {}, key)
    return AutoModelForCausalLM.from_pretrained(_check_path(path, key), config=config, dtype=dtype,
                                                trust_remote_code=trust_remote_code)


def load_critic(path: str, *, dtype: torch.dtype = torch.float32, trust_remote_code: bool = False,
                override_config: dict[str, Any] | None = None, key: str = "critic.model.path"):
    """Backbone + value head. A causal-LM checkpoint gets a fresh zero head; a saved critic keeps its own."""
    from transformers import AutoModelForTokenClassification

    config = _config(path, trust_remote_code, override_config or {}, key, num_labels=1)
    # dropout on values would make old and new values disagree; token-classification heads read
    # classifier_dropout when set and fall back to 0.1 otherwise, so it is always set
    config.classifier_dropout = 0.0
    if type(config) not in AutoModelForTokenClassification._model_mapping:
        raise ModelError(f"{key}={path}: model type '{config.model_type}' has no token-classification class in "
                         "transformers, so it cannot serve as a critic backbone; pick another critic.model.path")
    is_critic_checkpoint = any("ForTokenClassification" in a for a in (getattr(config, "architectures", None) or []))
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    if not is_critic_checkpoint:  # the missing head is expected: it is created (at zero) right below
        hf_logging.set_verbosity_error()
    try:
        model = AutoModelForTokenClassification.from_pretrained(_check_path(path, key), config=config, dtype=dtype,
                                                                trust_remote_code=trust_remote_code)
    finally:
        hf_logging.set_verbosity(verbosity)
    from rlcamp.models.families import value_head

    head = value_head(model)
    if not is_critic_checkpoint:
        with torch.no_grad():
            head.weight.zero_()
            if head.bias is not None:
                head.bias.zero_()
    return model
