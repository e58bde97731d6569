"""A step's metrics, under verl's names so that dashboards carry over (README: "Metric names").

Pure functions of the batch and the stage timings: ``critic/score/mean``, ``response_length/mean``,
``timing_s/gen``, ``timing_per_token_ms/update_actor``, ``perf/throughput``, and validation's
``val-core/<data_source>/<variable>/mean@<n>``.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Sequence

import torch

from rlcamp.algos import masked_mean
from rlcamp.batch import Batch


def stats(prefix: str, values: torch.Tensor) -> dict[str, float]:
    values = values.float()
    return {f"{prefix}/mean": values.mean().item(), f"{prefix}/max": values.max().item(),
            f"{prefix}/min": values.min().item()}


def batch_metrics(batch: Batch, max_prompt_length: int, compare_rollout: bool) -> dict[str, float]:
    """Scores, rewards, advantages, returns, values, lengths and, unless ``compare_rollout`` is False
    (bypass mode: nothing was recomputed), how far the rollout's log-probs are from the trainer's."""
    mask = batch["loss_mask"].bool()  # the statistics of what is trained on; lengths count every response token
    lengths = batch["response_mask"].sum(-1)
    prompt_lengths = batch["attention_mask"].sum(-1)
    out = {**stats("critic/score", batch["token_level_scores"].sum(-1)),
           **stats("critic/rewards", batch["token_level_rewards"].sum(-1)),
           **stats("critic/advantages", batch["advantages"][mask]),
           **stats("critic/returns", batch["returns"][mask]),
           **stats("response_length", lengths),
           **stats("prompt_length", prompt_lengths),
           "response_length/clip_ratio": (lengths == batch["responses"].shape[1]).float().mean().item(),
           "prompt_length/clip_ratio": (prompt_lengths == max_prompt_length).float().mean().item()}
    if "entropys" in batch:  # with bypass_mode the actor's update reports it instead
        out["actor/entropy"] = masked_mean(batch["entropys"], mask.float()).item()
    if "values" in batch:
        values, returns = batch["values"][mask], batch["returns"][mask]
        out.update(stats("critic/values", values))
        # 1 - Var[returns - values] / Var[returns]: how much of the returns the critic explains
        out["critic/vf_explained_var"] = (1.0 - (returns - values).var(unbiased=False)
                                          / (returns.var(unbiased=False) + 1e-5)).item()
    if "rm_scores" in batch:
        out.update(stats("critic/rm_score", batch["rm_scores"]))
    if compare_rollout:
        log_ratio = (batch["old_log_probs"] - batch["rollout_log_probs"])[mask]
        out["rollout/log_prob_diff_max"] = log_ratio.abs().max().item()
        out["rollout/log_prob_diff_mean"] = log_ratio.abs().mean().item()
        # KL(rollout || trainer), k3 estimator on the rollout's own samples (Schulman, "Approximating KL")
        out["rollout/log_prob_kl"] = (torch.exp(log_ratio) - 1 - log_ratio).mean().item()
    return out


# stages whose per-token time counts only the generated tokens; the others count prompt + response
_PER_TOKEN = {"gen": "response", "ref": "all", "values": "all", "adv": "all", "update_critic": "all",
              "update_actor": "all", "old_log_prob": "all"}


def timing_metrics(timing: dict[str, float], response_tokens: int, prompt_tokens: int, generated_tokens: int,
                   n_devices: int) -> dict[str, float]:
    """``timing_s/<stage>``, ``timing_per_token_ms/<stage>``, verl's ``perf/total_num_tokens``,
    ``perf/time_per_step`` and ``perf/throughput`` (tokens per second per device), and rlcamp's
    tokens per second of each stage. ``generated_tokens`` also counts what the engine generated past
    each response's end (``rollout.ignore_eos``)."""
    total = response_tokens + prompt_tokens
    out = {f"timing_s/{stage}": seconds for stage, seconds in timing.items()}
    for stage, which in _PER_TOKEN.items():
        if stage in timing:
            tokens = response_tokens if which == "response" else total
            out[f"timing_per_token_ms/{stage}"] = timing[stage] * 1000 / max(tokens, 1)
    out["perf/total_num_tokens"] = total
    out["perf/time_per_step"] = timing["step"]
    out["perf/throughput"] = total / (max(timing["step"], 1e-9) * n_devices)
    out["perf/generated_tokens"] = generated_tokens
    out["perf/gen_tokens_per_s"] = generated_tokens / max(timing["gen"], 1e-9)
    for stage in ("old_log_prob", "ref", "values", "update_critic", "update_actor"):
        if stage in timing:
            out[f"perf/{stage}_tokens_per_s"] = total / max(timing[stage], 1e-9)
    return out


def validation_metrics(data_sources: Sequence[str], groups: Sequence[int], variables: dict[str, Sequence[float]],
                       core: str) -> dict[str, float]:
    """verl's validation metrics, per data source and variable (``reward``, ``acc``, a scorer's extras).

    ``groups`` says which prompt each sample answers (n samples per prompt with val_kwargs.n). Per
    prompt: the mean (``mean@n``), and with n > 1 the standard deviation (``std@n``), the best and the
    worst of its n samples (``best@n/mean``, ``worst@n/mean``; verl estimates those by bootstrap,
    here they are exact); each averaged over the data source's prompts. ``core`` is the variable
    that goes under ``val-core/``, the rest under ``val-aux/``, as in verl."""
    by_source: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, (source, group) in enumerate(zip(data_sources, groups)):
        by_source[source][group].append(i)
    out: dict[str, float] = {}
    for source, prompts in sorted(by_source.items()):
        for name, values in variables.items():
            per_prompt = [torch.tensor([float(values[i]) for i in rows]) for rows in prompts.values()]
            n = max(len(v) for v in per_prompt)
            section = "val-core" if name == core else "val-aux"
            prefix = f"{section}/{source}/{name}"
            out[f"{prefix}/mean@{n}"] = torch.stack([v.mean() for v in per_prompt]).mean().item()
            if n > 1:
                out[f"{prefix}/std@{n}"] = torch.stack([v.std(unbiased=False) for v in per_prompt]).mean().item()
                out[f"{prefix}/best@{n}/mean"] = torch.stack([v.max() for v in per_prompt]).mean().item()
                out[f"{prefix}/worst@{n}/mean"] = torch.stack([v.min() for v in per_prompt]).mean().item()
    return out


def numeric_extras(extra: dict[str, list[Any]]) -> dict[str, list[float]]:
    """The scorer's per-sample extras that are numbers on every sample (a pass fraction, a count)."""
    return {k: [float(v) for v in values] for k, values in extra.items()
            if all(isinstance(v, (int, float)) for v in values)}  # bools count as 0 / 1
