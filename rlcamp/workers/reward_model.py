"""A learned reward model (``reward_model.enable=True``): sequence classification over prompt + response.

The response is decoded with the actor's tokenizer (``reward_model.model.input_tokenizer``) and
the conversation re-templated with the reward model's own tokenizer and chat template, so an RM
from another family (e.g. a Llama-3 RM for a Qwen actor) sees text in its own format. Scores come
in micro batches: a fixed number of sequences, or (``use_dynamic_bsz``) as many as fit in
``forward_max_token_len_per_gpu`` tokens.
"""

from __future__ import annotations

import torch

from rlcamp.batch import Batch
from rlcamp.config import RLConfig
from rlcamp.models.loading import _check_path, import_external_lib, load_tokenizer
from rlcamp.utils.device import to_dtype
from rlcamp.workers.base import Worker


def conversation_texts(tokenizer, raw_prompts: list[list[dict]], responses: list[str]) -> list[str]:
    """Each prompt's conversation with its response as the assistant's turn, in the reward model's
    chat template (``tokenizer``'s), as one text to score."""
    out = []
    for messages, response in zip(raw_prompts, responses):
        chat = list(messages) + [{"role": "assistant", "content": response}]
        if getattr(tokenizer, "chat_template", None):
            out.append(tokenizer.apply_chat_template(chat, tokenize=False))
        else:  # an RM without a template: plain role-tagged text
            out.append("\n\n".join(f"{m['role']}: {m['content']}" for m in chat))
    return out


class RewardModelWorker(Worker):
    def __init__(self, config: RLConfig, device: str = "cpu", micro_batch: int = 8):
        from transformers import AutoModelForSequenceClassification

        rm = config.reward_model
        self.rm_cfg, self.device = rm, torch.device(device)
        self.init_profiler(config, {"reward_model": rm.profiler}, "reward_model")
        import_external_lib(rm.model.external_lib)
        path = _check_path(rm.model.path, "reward_model.model.path")
        self.tokenizer = load_tokenizer(path, trust_remote_code=rm.model.trust_remote_code, key="reward_model.model.path")
        self.tokenizer.padding_side = "right"
        # what decodes the actor's token ids (the responses this model scores)
        self.input_tokenizer = load_tokenizer(rm.model.input_tokenizer, trust_remote_code=rm.model.trust_remote_code,
                                              key="reward_model.model.input_tokenizer")
        # fsdp_config.param_offload: on an accelerator the model waits in host memory between batches
        self.offload = rm.model.fsdp_config.param_offload and self.device.type != "cpu"
        self.model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=rm.model.trust_remote_code,
            dtype=to_dtype(rm.model.fsdp_config.model_dtype)).to("cpu" if self.offload else self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.micro_batch = micro_batch
        self.max_length = rm.max_length

    def texts(self, raw_prompts: list[list[dict]], responses: list[str]) -> list[str]:
        return conversation_texts(self.tokenizer, raw_prompts, responses)

    def compute_rm_score(self, raw_prompts: list[list[dict]], responses: list[str]) -> torch.Tensor:
        """One score per (prompt, response) pair, [batch]."""
        return self.score_texts(self.texts(raw_prompts, responses))

    @torch.no_grad()
    def score_texts(self, texts: list[str]) -> torch.Tensor:
        """One score per templated conversation, [batch], in micro batches."""
        if self.offload:
            self.model.to(self.device)
        scores = torch.empty(len(texts))
        for rows in self._micro_batches(texts):
            enc = self.tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True,
                                 truncation=self.max_length is not None, max_length=self.max_length,
                                 add_special_tokens=False).to(self.device)
            scores[rows] = self.model(**enc).logits[:, 0].float().cpu()
        if self.offload:
            self.model.to("cpu")
        return scores

    def _micro_batches(self, texts: list[str]) -> list[list[int]]:
        if not self.rm_cfg.use_dynamic_bsz:
            return [list(range(s, min(s + self.micro_batch, len(texts)))) for s in range(0, len(texts), self.micro_batch)]
        from rlcamp.controller.balance import token_budget_micro_batches

        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False)["input_ids"]]
        if self.max_length is not None:
            lengths = [min(n, self.max_length) for n in lengths]
        return token_budget_micro_batches(lengths, self.rm_cfg.forward_max_token_len_per_gpu)

    def close(self) -> None:
        """Nothing to stop: the model lives in this process."""

    def __call__(self, batch: Batch) -> torch.Tensor:
        """One score per response of ``batch``, [batch]: its tokens decoded with the input tokenizer."""
        lengths = batch["response_mask"].sum(-1).tolist()
        responses = [self.input_tokenizer.decode(row[:n], skip_special_tokens=True)
                     for row, n in zip(batch["responses"].tolist(), lengths)]
        return self.compute_rm_score(batch["raw_prompt"], responses)
