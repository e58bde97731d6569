"""Compiling SmolLM2-135M's whole decoder on CPU: bf16 forward + backward of 32 rows, eager against
``torch.compile(decoder, dynamic=True)``, interleaved, medians of --repeats; and the compile time.

Needs the main job's model (``rlcamp models prepare smollm2-135m-instruct``).

    python benchmarks/torch_compile_decoder.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


def main() -> None:
    from transformers import AutoModelForCausalLM

    from rlcamp.models.cpu_attention import use_on_cpu
    from rlcamp.models.prepare import prepare
    from rlcamp.trainer.run import quiet_libraries
    from rlcamp.utils.device import cpu_features, tune_cpu

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    tune_cpu()
    quiet_libraries()
    model = AutoModelForCausalLM.from_pretrained(prepare("smollm2-135m-instruct"), dtype=torch.bfloat16)
    use_on_cpu(model, {})
    model.config.use_cache = False
    eager = model.get_decoder()
    compiled = torch.compile(eager, dynamic=True)
    g = torch.Generator().manual_seed(0)

    def step(decoder, length: int) -> float:
        ids = torch.randint(0, model.config.vocab_size, (32, length), generator=g)
        start = time.perf_counter()
        out = decoder(input_ids=ids, position_ids=torch.arange(length)[None].expand(32, length),
                      attention_mask=torch.ones(32, length, dtype=torch.long)).last_hidden_state
        out.float().pow(2).mean().backward()
        model.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    start = time.perf_counter()
    step(compiled, 60), step(compiled, 71)
    print(f"CPU {cpu_features()}, {torch.get_num_threads()} threads; compiling took {time.perf_counter() - start:.0f} s")
    for length in (48, 64, 80):
        e, c = [], []
        for _ in range(args.repeats):
            e.append(step(eager, length))
            c.append(step(compiled, length))
        me, mc = statistics.median(e), statistics.median(c)
        print(f"{length} tokens: eager {me:.2f} s, compiled {mc:.2f} s, {me / mc:.2f}x")


if __name__ == "__main__":
    main()
