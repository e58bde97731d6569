"""TRL 1.12.0's PPO (``trl.experimental.ppo.PPOTrainer``, the last TRL release with PPO) on the spec's
work; run inside the harness's TRL 1.12.0 venv.

TRL's PPO scores responses with a reward *model* (it reads ``model.<base_model_prefix>`` and
``model.score``); ``RuleReward`` gives it the same rule reward as rlcamp through that interface.
TRL's PPO samples one response per prompt, so each prompt appears G times in a row in its data:
P x G responses per step on both sides.

    python trl_ppo_run.py SPEC.json RESULT.json
"""

from __future__ import annotations

import copy
import sys
import tempfile
import time

import torch

from task import StepClock, greedy_accuracy, load_spec, reward, test_rows, train_rows, write_result


class _RuleBackbone(torch.nn.Module):
    def __init__(self, tokenizer, truths: dict[str, str]):
        super().__init__()
        self.tokenizer, self.truths = tokenizer, truths
        self.rewards: list[float] = []

    def forward(self, input_ids, attention_mask, **_):
        texts = self.tokenizer.batch_decode(input_ids, skip_special_tokens=False)
        scores = []
        for text in texts:
            prompt = next((p for p in self.truths if p in text), None)
            scores.append(reward(text[text.index(prompt) + len(prompt):], self.truths[prompt]) if prompt else 0.0)
        self.rewards += scores
        hidden = torch.tensor(scores, dtype=torch.float32)[:, None, None].expand(-1, input_ids.shape[1], 1)

        class Out:
            hidden_states = (hidden,)
        return Out()


class RuleReward(torch.nn.Module):
    """A 'reward model' whose score at every position is the rule reward of the decoded response."""

    base_model_prefix = "backbone"

    def __init__(self, tokenizer, truths: dict[str, str]):
        super().__init__()
        self.backbone = _RuleBackbone(tokenizer, truths)
        self.score = torch.nn.Identity()


def main(spec_path: str, out_path: str) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    spec = load_spec(spec_path)
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(spec["threads"])
    P, G, T, M = spec["prompts_per_step"], spec["samples"], spec["response_tokens"], spec["prompts_per_optimizer_step"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    policy = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    ref = copy.deepcopy(policy)
    value = AutoModelForSequenceClassification.from_pretrained(spec["model"], num_labels=1, dtype=torch.float32)
    value.config.pad_token_id = tokenizer.pad_token_id
    rows = train_rows(spec)
    prompts = [tokenizer.apply_chat_template(r["prompt"], add_generation_prompt=True, tokenize=False) for r in rows]
    truths = {p: r["ground_truth"] for p, r in zip(prompts, rows)}
    reward_model = RuleReward(tokenizer, truths)
    repeated = [p for p in prompts for _ in range(G)]  # G samples of each prompt, side by side
    dataset = Dataset.from_dict({"input_ids": [tokenizer(p, add_special_tokens=False)["input_ids"] for p in repeated]})

    clock = StepClock()
    state = {"gen_s": 0.0, "tokens": 0, "opt_steps": 0, "step_start": time.perf_counter()}
    generate = policy.generate

    def fixed_length_generate(*args, **kwargs):
        # every response exactly T tokens, as rlcamp's rollout.ignore_eos: generation stops at no real
        # token (an id past the vocabulary), and stop_token="eos" below still ends each response at its
        # first EOS for reward and training, so both sides learn from the same thing (verl's semantics)
        config = copy.deepcopy(kwargs["generation_config"])
        config.eos_token_id = [policy.config.vocab_size]
        kwargs["generation_config"] = config
        start = time.perf_counter()
        out = generate(*args, **kwargs)
        state["gen_s"] += time.perf_counter() - start
        sequences = out.sequences if hasattr(out, "sequences") else out
        state["tokens"] += (sequences.shape[1] - kwargs["input_ids"].shape[1]) * sequences.shape[0]
        return out

    policy.generate = fixed_length_generate
    per_step = P // M * spec["epochs"]

    class Clock(TrainerCallback):  # TRL's PPO calls on_step_end once per update (= one training step)
        def on_step_end(self, args, trainer_state, control, **kwargs):
            now = time.perf_counter()
            rewards = reward_model.backbone.rewards
            clock.record(now - state["step_start"], state["gen_s"], state["tokens"], per_step,
                         sum(rewards) / max(len(rewards), 1))
            reward_model.backbone.rewards = []
            state.update(gen_s=0.0, tokens=0, step_start=now)

    with tempfile.TemporaryDirectory() as tmp:
        args = PPOConfig(
            # TRL 1.12: the rollout batch is per_device_train_batch_size x accumulation, cut into num_mini_batches
            output_dir=tmp, per_device_train_batch_size=P * G, gradient_accumulation_steps=1, num_mini_batches=P // M,
            num_ppo_epochs=spec["epochs"], response_length=T, stop_token="eos", temperature=1.0,
            learning_rate=spec["lr"], lr_scheduler_type="constant", total_episodes=spec["steps"] * P * G,
            kl_coef=0.05, kl_estimator="k1", cliprange=0.2, cliprange_value=0.2, vf_coef=0.1, gamma=1.0, lam=0.95,
            whiten_rewards=False, missing_eos_penalty=None, local_rollout_forward_batch_size=P * G,
            num_sample_generations=0, bf16=spec.get("precision") == "bf16", use_cpu=True, report_to="none", save_strategy="no",
            logging_steps=1, seed=spec["seed"], dataloader_num_workers=0)
        trainer = PPOTrainer(args=args, processing_class=tokenizer, model=policy, ref_model=ref,
                             reward_model=reward_model, train_dataset=dataset, value_model=value, callbacks=[Clock()])
        # TRL counts optimizer steps inside its loop; count them where they happen
        optimizer_step = trainer.optimizer.step

        def counted(*a, **k):
            state["opt_steps"] += 1
            return optimizer_step(*a, **k)

        trainer.optimizer.step = counted
        clock.start = time.perf_counter()
        state["step_start"] = clock.start
        trainer.train()
    for s in clock.steps:  # PPO updates policy and value in one optimizer step per mini batch
        s["optimizer_steps"] = state["opt_steps"] // max(len(clock.steps), 1)
    policy.generate = generate
    accuracy = greedy_accuracy(policy, tokenizer, test_rows(spec), spec["eval_tokens"])
    write_result(out_path, "trl 1.12.0 experimental PPOTrainer", clock, accuracy)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
