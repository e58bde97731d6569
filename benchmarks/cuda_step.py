"""The PPO step (GAE + critic) on a CUDA device, per stage: tokens/s and model FLOPs utilisation (#19).

A Qwen2.5-0.5B-shaped model with random weights (24 layers, hidden 896, 14 heads / 2 KV heads, MLP 4864,
vocabulary 151,936, tied head; speed only, so a tiny tokenizer and the arithmetic prompts), built on the
machine that runs it; rlcamp's own rollout engine, bf16 compute over fp32 master weights, every response
generated to the full length (ignore_eos), one process, no Ray.

    python benchmarks/cuda_step.py                                  # on a CUDA machine
    python benchmarks/cuda_step.py --device cpu --shape tiny --prompts 4 --samples 2 --response 8 --steps 2

Prints a markdown table per stage (tokens/s, TFLOP/s of the work, share of the bf16 matmul peak measured in
the same run) and writes it with every step's metrics to ``--out`` (a JSON file).
Work per token, dense (attention's share is added from the sequence lengths): forward 2N, forward + backward 6N.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "peers"))
sys.path.insert(0, str(HERE.parent))

QWEN25_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                  num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, rope_theta=1e6,
                  rms_norm_eps=1e-6, tie_word_embeddings=True)
# the same vocabulary and head layout, two narrow layers: the dry run of this script on a CPU
TINY = dict(QWEN25_05B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=1)
# forward FLOPs factor per token of each stage (the generation is timed as tokens/s, memory-bound)
PASSES = {"old_log_prob": 2, "ref": 2, "values": 2, "update_critic": 6, "update_actor": 6}
CRITIC = ("values", "update_critic")


def matmul_peak_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """Square bf16 product on random data, the mean of ``repeats`` after 3 warm-ups, timed with the device's clock."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1e3
    else:
        t0 = time.perf_counter()
        for _ in range(repeats):
            a @ b
        seconds = time.perf_counter() - t0
    return 2 * n ** 3 * repeats / seconds / 1e12


def copy_bandwidth_gbs(device: torch.device, gib: float = 2.0) -> float:
    """A device-to-device copy, bytes read plus written per second (the ceiling of decode)."""
    src = torch.empty(int(gib * 2 ** 30), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        dst.copy_(src)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return 2 * src.numel() * 5 / (time.perf_counter() - t0) / 1e9


def build_model(folder: Path, shape: dict) -> tuple[Path, int, dict]:
    from transformers import AutoConfig

    from rlcamp.models.tiny import build_tiny_model

    build_tiny_model(folder, "qwen2", **shape)
    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        from transformers import AutoModelForCausalLM

        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(config).parameters())
    return folder, n, config.to_dict()


def attention_flops(config: dict, prompt: float, response: int) -> float:
    """Forward FLOPs of the score and value products per sequence, causal: 2 x 2 x layers x heads x head_dim
    x (sum over positions of the positions attended), summed over prompt + response positions."""
    length = prompt + response
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    per_pair = 4 * config["num_hidden_layers"] * config["num_attention_heads"] * head_dim
    return per_pair * length * (length + 1) / 2


def profiled(method, at_call: int, into: dict, name: str):
    """``method``, with its ``at_call``-th call run under the torch profiler (CPU and CUDA activities)."""
    from torch.profiler import ProfilerActivity, profile

    calls = []

    def run(*args, **kwargs):
        calls.append(1)
        if len(calls) != at_call:
            return method(*args, **kwargs)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        with profile(activities=activities) as prof:
            out = method(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
        sort = "self_cuda_time_total" if torch.cuda.is_available() else "self_cpu_time_total"
        table = prof.key_averages().table(sort_by=sort, row_limit=15, max_name_column_width=60)
        into[name] = table
        print(f"===== {name} (call {at_call})\n{table}", flush=True)
        return out

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--shape", choices=["qwen2.5-0.5b", "tiny"], default="qwen2.5-0.5b")
    parser.add_argument("--algo", choices=["ppo", "grpo"], default="ppo")
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--response", type=int, default=256)
    parser.add_argument("--mini", type=int, default=16, help="prompts per optimizer step")
    parser.add_argument("--micro", type=int, default=32, help="responses per forward/backward (update)")
    parser.add_argument("--forward-micro", type=int, default=64, help="responses per forward (log-probs, values)")
    parser.add_argument("--steps", type=int, default=4, help="the first is a warm-up and left out of the medians")
    parser.add_argument("--out", default="cuda_step.json")
    parser.add_argument("--profile", default="", help="comma-separated worker methods (actor.update_actor, "
                        "actor.generate, ...) whose last call is profiled: the kernels' device time, top 15")
    parser.add_argument("extra", nargs="*", help="further config overrides")
    args = parser.parse_intermixed_args()
    device = torch.device(args.device)
    from rlcamp_run import make_trainer

    report: dict = {"args": vars(args), "torch": torch.__version__}
    if device.type == "cuda":
        report["gpu"] = torch.cuda.get_device_name(device)
    report["peak_bf16_tflops"] = matmul_peak_tflops(device, n=8192 if device.type == "cuda" else 1024,
                                                    repeats=10 if device.type == "cuda" else 2)
    report["copy_gbs"] = copy_bandwidth_gbs(device, 2.0 if device.type == "cuda" else 0.25)
    print(f"peak bf16 {report['peak_bf16_tflops']:.0f} TFLOP/s, copy {report['copy_gbs']:.0f} GB/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model, n_params, config = build_model(tmp / "model", QWEN25_05B if args.shape != "tiny" else TINY)
        report["model_build_s"] = time.perf_counter() - t0
        report["n_params"] = n_params
        spec = {"model": str(model), "prompts_per_step": args.prompts, "samples": args.samples,
                "response_tokens": args.response, "prompts_per_optimizer_step": args.mini, "epochs": 1, "lr": 1e-6,
                "steps": args.steps, "seed": 0, "n_test": 32, "threads": torch.get_num_threads(), "precision": "bf16"}
        micro = args.micro
        fwd = args.forward_micro
        extra = [f"trainer.device={args.device}", f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
                 f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={fwd}",
                 f"actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu={fwd}"]
        if args.algo == "ppo":
            extra += [f"critic.ppo_micro_batch_size_per_gpu={micro}", f"critic.forward_micro_batch_size_per_gpu={fwd}"]
        else:  # GRPO with the KL loss to a reference, verl's GRPO recipe
            extra += ["actor_rollout_ref.actor.use_kl_loss=True"]
        extra += list(args.extra)
        report["overrides"] = extra
        t0 = time.perf_counter()
        trainer = make_trainer(args.algo, spec, tmp, extra)
        report["trainer_build_s"] = time.perf_counter() - t0
        for target in filter(None, args.profile.split(",")):
            role, name = target.split(".")
            worker = getattr(trainer, role).workers[0]
            setattr(worker, name, profiled(getattr(worker, name), args.steps, report.setdefault("profiles", {}), target))
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        try:
            trainer.fit()
        finally:
            trainer.shutdown()
        rows = [json.loads(line) for line in (tmp / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in rows if "timing_s/step" in m]
    report["steps"] = steps
    if device.type == "cuda":
        report["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    timed = steps[1:] or steps
    med = lambda key: statistics.median(m[key] for m in timed if key in m)  # noqa: E731
    prompt_len = med("prompt_length/mean")
    sequences = args.prompts * args.samples
    tokens = med("perf/total_num_tokens")
    attn = attention_flops(config, prompt_len, args.response) * sequences
    peak = report["peak_bf16_tflops"]
    table = [f"| stage | seconds | tokens/s | TFLOP/s of the work | MFU (of {peak:.0f} TFLOP/s measured) |",
             "| --- | --- | --- | --- | --- |"]
    gen_s = med("timing_s/gen")
    generated = med("perf/generated_tokens")
    weight_bytes = 2 * n_params  # the bf16 rollout copy, read once per decode step
    decode_bound = report["copy_gbs"] * 1e9 / 2 / weight_bytes * sequences  # reads only: half the copy figure
    table.append(f"| gen ({sequences} x {args.response} tokens) | {gen_s:.2f} | {generated / gen_s:,.0f} | "
                 f"- | weights-read bound {decode_bound:,.0f} tokens/s ({generated / gen_s / decode_bound:.0%}) |")
    total_flops = 0.0
    for stage, k in PASSES.items():
        key = f"timing_s/{stage}"
        if not any(key in m for m in timed):
            continue
        seconds = med(key)
        # the critic has the same body and a one-output value head instead of the vocabulary's
        params = n_params - (config["vocab_size"] * config["hidden_size"] if stage in CRITIC else 0)
        flops = k * params * tokens + k / 2 * attn
        total_flops += flops
        table.append(f"| {stage} | {seconds:.2f} | {tokens / seconds:,.0f} | {flops / seconds / 1e12:.0f} | "
                     f"{flops / seconds / 1e12 / peak:.1%} |")
    step_s = med("timing_s/step")
    train_s = sum(med(f"timing_s/{s}") for s in PASSES if any(f"timing_s/{s}" in m for m in timed))
    table.append(f"| training passes together | {train_s:.2f} | - | {total_flops / train_s / 1e12:.0f} | "
                 f"{total_flops / train_s / 1e12 / peak:.1%} |")
    table.append(f"| whole step | {step_s:.2f} | {generated / step_s:,.0f} generated | "
                 f"{total_flops / step_s / 1e12:.0f} | {total_flops / step_s / 1e12 / peak:.1%} |")
    report["table"] = table
    print(f"{report.get('gpu', args.device)}, torch {torch.__version__}, {n_params / 1e6:.1f}M parameters, "
          f"{args.algo}, {sequences} responses x {args.response} tokens, prompt {prompt_len:.0f} tokens, "
          f"steps {[round(m['timing_s/step'], 2) for m in steps]} s, peak memory "
          f"{report.get('peak_memory_gib', float('nan')):.1f} GiB")
    print("\n".join(table))
    Path(args.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
