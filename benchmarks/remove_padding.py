"""use_remove_padding on vs off, on the same batch of the main job (SmolLM2-135M, CPU).

One trainer, one generated batch; then the four model stages (old_log_prob, values,
update_critic, update_actor) run alternately padded / packed, --repeats times each (A B A B).
Reports the median seconds per mode and the ratio.

    python benchmarks/remove_padding.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from _main_job import main_job_trainer

    trainer = main_job_trainer("/tmp/rlcamp_bench_rmpad")
    actor, critic = trainer.actor.workers[0], trainer.critic.workers[0]
    from rlcamp.trainer.stages import StepState
    from rlcamp.trainer.validation import prompt_batch

    s, st = StepState(prompt_batch(next(iter(trainer.loader))), 1), trainer.stages
    for stage in (st.generate, st.reward, st.old_log_prob, st.values, st.advantages):
        stage(s)
    batch = s.batch
    lengths = batch["response_mask"].sum(-1).float()
    print(f"batch: {len(batch)} responses, length mean {lengths.mean():.1f} min {lengths.min():.0f} "
          f"max {lengths.max():.0f} of {batch['responses'].shape[1]}; prompts {batch['attention_mask'].sum(-1).float().mean():.1f} tokens")

    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.repeats):
        for packed in (False, True):
            actor.remove_padding = critic.remove_padding = packed
            start = time.perf_counter()
            actor.compute_log_prob(batch)
            critic.compute_values(batch)
            critic.update_critic(batch)
            actor.update_actor(batch)
            times[packed].append(time.perf_counter() - start)
    padded, packed = statistics.median(times[False]), statistics.median(times[True])
    print(f"model stages per step: padded {padded:.2f} s, packed {packed:.2f} s, speed-up {padded / packed:.2f}x")


if __name__ == "__main__":
    main()
