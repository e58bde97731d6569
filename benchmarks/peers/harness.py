"""rlcamp against TRL on identical work, side by side, runs interleaved A B A B.

    python benchmarks/peers/harness.py --pair grpo|ppo --model tiny|smollm2 [--steps 4] [--repeats 2]

Pairs: ``ppo``: rlcamp PPO (GAE + critic) vs TRL 1.12.0's ``trl.experimental.ppo.PPOTrainer`` (the
last TRL with PPO); ``grpo``: rlcamp GRPO vs the latest TRL's ``GRPOTrainer``. Each TRL runs in its
own virtual environment, created here on first use (``benchmarks/peers/.venvs/``, ignored by git)
with the same torch 2.13.0 CPU build and transformers as rlcamp, plus rlcamp itself installed
without dependencies so the reward and evaluation are the same code (``task.py``).

Equal work is checked, not assumed: every step of every run reports the tokens it generated and
the optimizer steps it took, and the harness refuses to compare runs where they differ. Reported
per pair: median ratios of seconds per training step, rollout tokens/s, training tokens/s
(response tokens / (step - generation)), peak RSS, plus the reward per step and greedy accuracy
after the run, and a PNG of reward against wall-clock time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TRL = {"ppo": "1.12.0", "grpo": "1.16.0"}  # 1.16.0: the newest TRL on the index when this was written


def venv_for(version: str) -> Path:
    """A venv with trl==version next to rlcamp's torch and transformers (created once)."""
    import torch
    import transformers

    venv = HERE / ".venvs" / f"trl-{version}"
    python = venv / "bin" / "python"
    stamp = venv / ".ready"
    if stamp.exists():
        return python
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    torch_version = torch.__version__.split("+")[0]
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"torch=={torch_version}"], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", f"trl=={version}",
                    f"transformers=={transformers.__version__}", "accelerate", "datasets", "pyarrow", "matplotlib"],
                   check=True)
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT)], check=True)
    stamp.touch()
    return python


def model_path(name: str) -> str:
    if name == "smollm2":
        from rlcamp.models.prepare import prepare

        return str(prepare("smollm2-135m-instruct"))
    from rlcamp.models.tiny import build_tiny_model

    # a tiny Qwen2 from a config (random weights): speed only, its reward stays near zero
    path = HERE / ".venvs" / "tiny-qwen2"
    if not (path / "config.json").exists():
        build_tiny_model(path, "qwen2", hidden_size=128, intermediate_size=256, num_attention_heads=2,
                         num_key_value_heads=1)
    return str(path)


def run(cmd: list[str], result: Path) -> dict:
    """One run in its own process; its peak RSS comes from the kernel's accounting of that process."""
    env = dict(os.environ, PYTHONPATH=str(HERE), TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output, _ = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{output[-4000:]}")
    return json.loads(result.read_text())


def summarise(r: dict, spec: dict) -> dict:
    steps = r["steps"][1:] if len(r["steps"]) > 1 else r["steps"]  # the first step pays one-off set-up
    tokens = spec["prompts_per_step"] * spec["samples"] * spec["response_tokens"]
    return {"step_s": statistics.median(s["seconds"] for s in steps),
            "rollout_tps": statistics.median(s["generated_tokens"] / s["generate_s"] for s in steps),
            "train_tps": statistics.median(tokens / (s["seconds"] - s["generate_s"]) for s in steps),
            "rss_gb": r["peak_rss_gb"], "final_reward": r["steps"][-1]["reward"], "accuracy": r["accuracy"]}


def matmul_peak_gflops(dtype, n: int = 2048) -> float:
    """This machine's measured square matmul throughput (all cores), the ceiling for the training figure:
    the same timing as ``benchmarks/gemm_ceiling.py``'s per-shape ceiling, so the two compare."""
    import torch

    sys.path.insert(0, str(HERE.parent))
    from gemm_ceiling import rate

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    return rate(n, n, n, dtype, min_s=1.0)


def model_flops_per_token(pair: str, model: str) -> tuple[float, int]:
    """Dense FLOPs per token of the non-generation part of a step (attention's share ignored at these
    lengths): forward 2N, forward + backward 6N. GRPO: old log-probs (2N) + actor update (6N) = 8N;
    PPO: old log-probs, reference, values (3 x 2N) + actor and critic updates (2 x 6N) = 18N."""
    from transformers import AutoConfig, AutoModelForCausalLM

    with __import__("torch").device("meta"):
        n = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model)).parameters())
    return (8 if pair == "grpo" else 18) * n, n


def check_equal_work(results: list[dict], spec: dict) -> None:
    tokens = spec["prompts_per_step"] * spec["samples"] * spec["response_tokens"]
    optimizer_steps = spec["prompts_per_step"] // spec["prompts_per_optimizer_step"] * spec["epochs"]
    for r in results:
        for i, s in enumerate(r["steps"]):
            if s["generated_tokens"] != tokens or s["optimizer_steps"] != optimizer_steps:
                raise RuntimeError(f"{r['side']} step {i + 1}: {s['generated_tokens']} tokens and "
                                   f"{s['optimizer_steps']} optimizer steps, the spec asks {tokens} and "
                                   f"{optimizer_steps}: the work is not equal, no comparison")
        if len(r["steps"]) != spec["steps"]:
            raise RuntimeError(f"{r['side']} ran {len(r['steps'])} steps, the spec asks {spec['steps']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pair", choices=["ppo", "grpo"], required=True)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                        help="fp32 everywhere, or bf16 mixed precision (fp32 weights, bf16 compute) on both sides")
    parser.add_argument("--rlcamp", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override for rlcamp's side (repeatable), e.g. "
                             "algorithm.rollout_correction.bypass_mode=True; the results are tagged --tag")
    parser.add_argument("--tag", default="", help="suffix of the result files, for runs with --rlcamp overrides")
    parser.add_argument("--out", default="results", help="results folder (relative: under benchmarks/peers/)")
    parser.add_argument("--report-only", action="store_true", help="re-make the table and plot from saved runs")
    args = parser.parse_args()
    import torch

    from rlcamp.utils.device import cpu_features, cpu_matmul_is_fast

    if args.precision == "bf16" and not args.report_only and not cpu_matmul_is_fast(torch.bfloat16):
        parser.error(f"--precision bf16 needs a CPU with bf16 matrix kernels (AVX-512 or AMX); this one has "
                     f"{cpu_features()}, where both sides would time torch's reference loop: use fp32")
    out = Path(args.out) if Path(args.out).is_absolute() else HERE / args.out  # relative: under benchmarks/peers
    out.mkdir(parents=True, exist_ok=True)
    if args.rlcamp and not args.tag:
        parser.error("--rlcamp adds a side of rlcamp with those overrides: name it with --tag")
    spec = {"model": model_path(args.model), "prompts_per_step": args.prompts, "samples": args.samples,
            "response_tokens": args.tokens, "prompts_per_optimizer_step": args.prompts // 2, "epochs": 1,
            "lr": 1e-5 if args.model == "smollm2" else 1e-4, "steps": args.steps, "seed": 0, "n_test": 32,
            "eval_tokens": 32, "threads": len(os.sched_getaffinity(0)), "precision": args.precision}
    tag = f"{args.pair}-{args.model}" + ("-bf16" if args.precision == "bf16" else "") + (f"-{args.tag}" if args.tag else "")
    trl_python = venv_for(TRL[args.pair])
    if args.report_only:
        saved = json.loads((out / f"{tag}.json").read_text())
        spec, results = saved["spec"], saved["results"]
    else:
        spec_file = out / f"{tag}.spec.json"
        spec_file.write_text(json.dumps(spec, indent=1))
        rlcamp = [sys.executable, "rlcamp_run.py", args.pair, str(spec_file)]
        sides = {"rlcamp": (rlcamp, [])}  # each side: its command, and what follows the result path
        if args.rlcamp:  # the same runner and spec, with the overrides after it
            sides[f"rlcamp {args.tag}"] = (rlcamp, ["--"] + args.rlcamp)
        sides["trl"] = ([str(trl_python), f"trl_{args.pair}_run.py", str(spec_file)], [])
        results = {side: [] for side in sides}
        for i in range(args.repeats):  # A B A B (A B C A B C with a variant)
            for side, (cmd, after) in sides.items():
                result = out / f"{tag}.{side.replace(' ', '-')}.{i}.json"
                results[side].append(run(cmd + [str(result)] + after, result))
                print(f"{side} run {i + 1}: {[round(s['seconds'], 1) for s in results[side][-1]['steps']]} s/step",
                      flush=True)
    check_equal_work([r for rs in results.values() for r in rs], spec)
    rows = {side: [summarise(r, spec) for r in rs] for side, rs in results.items()}
    med = {side: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for side, rs in rows.items()}
    ours = [side for side in results if side != "trl"]

    def row(name: str, key: str, fmt: str, higher_is_better: bool | None) -> str:
        cells = [format(med[side][key], fmt) for side in ours + ["trl"]]
        if higher_is_better is not None:
            cells += [f"{(med[side][key] / med['trl'][key]) if higher_is_better else (med['trl'][key] / med[side][key]):.2f}x"
                      for side in ours]
        else:
            cells += [""] * len(ours)
        return f"| {name} | " + " | ".join(cells) + " |"

    lines = [f"| {args.pair} on {args.model}, {spec.get('precision', 'fp32')} | " + " | ".join(ours)
             + f" | {results['trl'][0]['side']} | " + " | ".join(f"{side} advantage" for side in ours) + " |",
             "|" + " --- |" * (2 + 2 * len(ours)),
             row("seconds per step", "step_s", ".2f", False), row("rollout tokens/s", "rollout_tps", ".0f", True),
             row("training tokens/s", "train_tps", ".0f", True), row("peak RSS (GiB)", "rss_gb", ".2f", False),
             row("reward, last step", "final_reward", ".3f", None),
             row("greedy accuracy after", "accuracy", ".3f", None)]
    # training throughput as a fraction of the matmul peak measured in this run, in the run's precision
    from transformers import AutoTokenizer

    from task import train_rows

    tok = AutoTokenizer.from_pretrained(spec["model"])
    # (return_dict=False: transformers 5 returns a BatchEncoding by default, whose len() is its 2 keys)
    prompt_tokens = statistics.mean(len(tok.apply_chat_template(r["prompt"], add_generation_prompt=True,
                                                                return_dict=False)) for r in train_rows(spec))
    per_token, n_params = model_flops_per_token(args.pair, spec["model"])
    tokens = spec["prompts_per_step"] * spec["samples"] * (prompt_tokens + spec["response_tokens"])
    # (no bf16 figure where torch has no bf16 kernels: its reference loop takes minutes per product)
    peaks = {"fp32": matmul_peak_gflops(torch.float32),
             "bf16": matmul_peak_gflops(torch.bfloat16) if cpu_matmul_is_fast(torch.bfloat16) else float("nan")}
    # the FLOPs of the work as specified (every sample's prompt counted), whatever a side skips
    peak = peaks[spec.get("precision", "fp32")]
    for side in results:
        train_s = med[side]["step_s"] - statistics.median(s["generate_s"] for r in results[side] for s in r["steps"][1:])
        achieved = per_token * tokens / train_s / 1e9
        lines.append(f"| training GFLOP/s of the work ({n_params / 1e6:.1f}M params, {per_token / n_params:.0f}N per "
                     f"token), {side if side != 'trl' else results['trl'][0]['side']} | {achieved:.1f} | {achieved / peak:.1%} of "
                     f"{spec.get('precision', 'fp32')} peak |")
    lines.append(f"| matmul peak measured now (2048^3) | fp32 {peaks['fp32']:.0f} GFLOP/s | bf16 {peaks['bf16']:.0f} GFLOP/s | |")
    if args.rlcamp:
        lines.append(f"| rlcamp {args.tag}: overrides | {' '.join(args.rlcamp)} | |")
    table = "\n".join(lines)
    print(table)
    (out / f"{tag}.md").write_text(table + "\n")
    (out / f"{tag}.json").write_text(json.dumps({"spec": spec, "results": results}, indent=1))
    plot = subprocess.run([str(trl_python), "plot.py", str(out / f"{tag}.json"), str(out / f"{tag}.png")], cwd=HERE)
    if plot.returncode == 0:
        print(f"plot: {out / f'{tag}.png'}")


if __name__ == "__main__":
    main()
