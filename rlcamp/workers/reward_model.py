"""A learned reward model (``reward_model.enable=True``): sequence classification over prompt + response.

The response is decoded with the actor's tokenizer and the conversation re-templated with the
reward model's own tokenizer and chat template, so an RM from another family (e.g. a Llama-3 RM
for a Qwen actor) sees text in its own format. Scores come in micro batches.
"""

from __future__ import annotations

import torch

from rlcamp.batch import Batch
from rlcamp.config import RLConfig
from rlcamp.models.loading import _check_path, import_external_lib, load_tokenizer


class RewardModelWorker:
    def __init__(self, config: RLConfig, device: str = "cpu"):
        from transformers import AutoModelForSequenceClassification

        rm = config.reward_model
        self.cfg, self.device = rm, torch.device(device)
        import_external_lib(rm.model.external_lib)
        path = _check_path(rm.model.path, "reward_model.model.path")
        self.tokenizer = load_tokenizer(path, trust_remote_code=rm.model.trust_remote_code, key="reward_model.model.path")
        self.tokenizer.padding_side = "right"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=rm.model.trust_remote_code).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.micro_batch = rm.micro_batch_size_per_gpu or 8
        self.max_length = rm.max_length

    def texts(self, raw_prompts: list[list[dict]], responses: list[str]) -> list[str]:
        out = []
        for messages, response in zip(raw_prompts, responses):
            chat = list(messages) + [{"role": "assistant", "content": response}]
            if getattr(self.tokenizer, "chat_template", None):
                out.append(self.tokenizer.apply_chat_template(chat, tokenize=False))
            else:  # an RM without a template: plain role-tagged text
                out.append("\n\n".join(f"{m['role']}: {m['content']}" for m in chat))
        return out

    @torch.no_grad()
    def compute_rm_score(self, raw_prompts: list[list[dict]], responses: list[str]) -> torch.Tensor:
        """One score per (prompt, response) pair, [batch]."""
        texts = self.texts(raw_prompts, responses)
        scores = []
        for start in range(0, len(texts), self.micro_batch):
            enc = self.tokenizer(texts[start:start + self.micro_batch], return_tensors="pt", padding=True,
                                 truncation=self.max_length is not None, max_length=self.max_length,
                                 add_special_tokens=False).to(self.device)
            scores.append(self.model(**enc).logits[:, 0].float().cpu())
        return torch.cat(scores)

    def __call__(self, batch: Batch, responses: list[str]) -> torch.Tensor:
        return self.compute_rm_score(batch["raw_prompt"], responses)
