"""TRL's GRPOTrainer (latest trl) on the spec's work; run inside the harness's TRL venv.

    python trl_grpo_run.py SPEC.json RESULT.json
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch

from task import StepClock, greedy_accuracy, load_spec, reward, test_rows, train_rows, write_result


def main(spec_path: str, out_path: str) -> None:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    spec = load_spec(spec_path)
    torch.manual_seed(spec["seed"])
    torch.set_num_threads(spec["threads"])
    P, G, T, M = spec["prompts_per_step"], spec["samples"], spec["response_tokens"], spec["prompts_per_optimizer_step"]
    per_step = P // M * spec["epochs"]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    clock = StepClock()
    state = {"gen_s": 0.0, "tokens": 0, "rewards": [], "opt_steps": 0, "step_start": time.perf_counter()}

    generate = model.generate

    def timed_generate(*args, **kwargs):  # TRL calls the model's generate for its rollouts
        start = time.perf_counter()
        out = generate(*args, **kwargs)
        state["gen_s"] += time.perf_counter() - start
        ids = kwargs.get("input_ids", args[0] if args else None)
        sequences = out.sequences if hasattr(out, "sequences") else out
        state["tokens"] += (sequences.shape[1] - ids.shape[1]) * sequences.shape[0]
        return out

    model.generate = timed_generate

    def reward_fn(completions, ground_truth, **_):
        scores = [reward(c[0]["content"] if isinstance(c, list) else c, gt) for c, gt in zip(completions, ground_truth)]
        state["rewards"] += scores
        return scores

    class Clock(TrainerCallback):
        def on_step_end(self, args, trainer_state, control, **kwargs):
            state["opt_steps"] += 1
            if state["opt_steps"] % per_step == 0:  # one generation round = one training step
                now = time.perf_counter()
                clock.record(now - state["step_start"], state["gen_s"], state["tokens"], per_step,
                             sum(state["rewards"]) / max(len(state["rewards"]), 1))
                state.update(gen_s=0.0, tokens=0, rewards=[], step_start=now)

    # every response exactly T tokens, as rlcamp's rollout.ignore_eos: generation stops at no real token
    # (an id past the vocabulary), while TRL's completion mask still ends each response at its first
    # EOS, so both sides train and score the same thing (verl's semantics)
    past_eos = {"eos_token_id": [model.config.vocab_size]}
    with tempfile.TemporaryDirectory() as tmp:
        args = GRPOConfig(
            output_dir=tmp, per_device_train_batch_size=M * G, gradient_accumulation_steps=1, num_generations=G,
            steps_per_generation=P // M, num_iterations=spec["epochs"], max_completion_length=T,
            generation_kwargs=past_eos, temperature=1.0, top_k=0, top_p=1.0,
            learning_rate=spec["lr"], lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.01,
            beta=0.0, loss_type="dapo", max_steps=spec["steps"] * per_step, logging_steps=1, save_strategy="no",
            report_to="none", bf16=spec.get("precision") == "bf16", use_cpu=True, shuffle_dataset=False, seed=spec["seed"],
            dataloader_num_workers=0, disable_dropout=True, max_grad_norm=1.0)
        trainer = GRPOTrainer(model=model, reward_funcs=reward_fn, args=args, processing_class=tokenizer,
                              train_dataset=Dataset.from_list(train_rows(spec)), callbacks=[Clock()])
        clock.start = time.perf_counter()
        state["step_start"] = clock.start
        trainer.train()
    model.generate = generate
    accuracy = greedy_accuracy(model, tokenizer, test_rows(spec), spec["eval_tokens"])
    import trl

    write_result(out_path, f"trl {trl.__version__} GRPOTrainer", clock, accuracy)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
