import pytest

from rlcamp.config import ConfigError, build_config, resolve

# a valid one-device baseline; tests change one thing at a time
BASE = ["trainer.n_gpus_per_node=1", "data.train_batch_size=8", "actor_rollout_ref.rollout.n=4",
        "actor_rollout_ref.actor.ppo_mini_batch_size=4", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
        "critic.ppo_micro_batch_size_per_gpu=4"]


def ok(*overrides, n_prompts=None):
    return resolve(build_config(BASE + list(overrides)), n_prompts)


def problems(*overrides, n_prompts=None):
    with pytest.raises(ConfigError) as err:
        ok(*overrides, n_prompts=n_prompts)
    return err.value.problems


def test_derived_batch_plan():
    d = ok(n_prompts=100).derived
    # 8 prompts x 4 = 32 responses; mini batch 4 prompts = 16 responses = 8 micro batches of 2
    assert d.responses_per_step == 32 and d.dp_size == 1
    assert d.actor.mini_batch_responses_per_device == 16 and d.actor.grad_accum_steps == 8
    assert d.actor.mini_batches_per_epoch == 2 and d.actor.optimizer_steps_per_train_step == 2
    assert d.critic.micro_batch_per_device == 4 and d.critic.grad_accum_steps == 4
    assert d.rollout_log_prob_micro_batch_per_device == 2  # falls back to the actor's micro batch
    assert d.uses_critic and not d.uses_ref and d.ref_log_prob_micro_batch_per_device is None
    # 100 prompts / 8 per step = 12 steps per epoch (last partial batch dropped) x 30 epochs
    assert d.steps_per_epoch == 12 and d.total_training_steps == 360


def test_total_steps_and_warmup():
    d = ok("trainer.total_training_steps=50", "actor_rollout_ref.actor.optim.lr_warmup_steps_ratio=0.1",
           "critic.optim.lr_warmup_steps=3", n_prompts=100).derived
    assert d.total_training_steps == 50 and d.actor_lr_warmup_steps == 5 and d.critic_lr_warmup_steps == 3
    assert ok().derived.total_training_steps is None
    assert any("fewer than one batch" in p for p in problems(n_prompts=5))


def test_mini_batch_must_divide_train_batch():
    assert ("data.train_batch_size=8 is not divisible by actor_rollout_ref.actor.ppo_mini_batch_size=3 (prompts); "
            "each mini batch must hold whole prompt groups") in problems("actor_rollout_ref.actor.ppo_mini_batch_size=3",
                                                                        "critic.ppo_mini_batch_size=4")
    assert any("larger than data.train_batch_size=8" in p for p in problems("actor_rollout_ref.actor.ppo_mini_batch_size=16"))


def test_micro_batch_checks():
    assert any("ppo_micro_batch_size_per_gpu is not set" in p
               for p in problems("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=null"))
    assert any("not divisible by actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3" in p and "16 responses" in p
               for p in problems("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3"))
    assert any("remove the deprecated actor_rollout_ref.actor.ppo_micro_batch_size" in p
               for p in problems("actor_rollout_ref.actor.ppo_micro_batch_size=2"))
    d = ok("actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=null", "actor_rollout_ref.actor.ppo_micro_batch_size=4")
    assert d.derived.actor.micro_batch_per_device == 4
    assert ok("actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=8").derived.rollout_log_prob_micro_batch_per_device == 8


def test_multi_device_splits_are_explained():
    found = problems("trainer.n_gpus_per_node=3")
    assert any("do not split evenly over 3 data-parallel ranks" in p for p in found)
    d = ok("trainer.n_gpus_per_node=2").derived  # 32 responses over 2 ranks: 8 per device per mini batch
    assert d.dp_size == 2 and d.actor.mini_batch_responses_per_device == 8 and d.actor.grad_accum_steps == 4
    assert any("trainer.worker_group=in_process runs one device" in p
               for p in problems("trainer.n_gpus_per_node=2", "trainer.worker_group=in_process"))


def test_group_estimators_need_groups_and_ref_when_kl():
    assert any("adv_estimator=grpo compares responses within a prompt group and needs actor_rollout_ref.rollout.n >= 2" in p
               for p in problems("algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=1"))
    d = ok("algorithm.adv_estimator=grpo", "actor_rollout_ref.actor.use_kl_loss=True").derived
    assert d.uses_ref and not d.uses_critic and d.critic is None and d.ref_log_prob_micro_batch_per_device == 2


def test_range_checks():
    found = problems("actor_rollout_ref.actor.clip_ratio_c=1.0", "actor_rollout_ref.actor.clip_ratio=1.5",
                     "actor_rollout_ref.rollout.temperature=0", "actor_rollout_ref.rollout.val_kwargs.n=4",
                     "trainer.save_freq=0", "algorithm.lam=1.5", "trainer.resume_mode=resume_path")
    text = "\n".join(found)
    for fragment in ["clip_ratio_c=1.0 must be > 1", "clip_ratio_low=1.5 must be in (0, 1)",
                     "temperature=0.0 with do_sample=True", "val_kwargs.n=4 with do_sample=False",
                     "trainer.save_freq=0 must be -1", "algorithm.lam=1.5", "needs trainer.resume_from_path"]:
        assert fragment in text, fragment


def test_arith_partial_credit_is_checked_before_any_model_loads():
    ok("+custom_reward_function.reward_kwargs.marked_score=0.2")
    for bad in ("1.0", "-0.5", "high"):
        found = problems(f"+custom_reward_function.reward_kwargs.marked_score={bad}")
        assert any("marked_score" in p and "[0, 1)" in p for p in found), found


def test_known_but_unimplemented_options_fail_loudly():
    text = "\n".join(problems("actor_rollout_ref.rollout.mode=async", "reward_model.reward_manager=dapo",
                              "reward_model.ulysses_sequence_parallel_size=2"))
    assert "rollout.mode=async is served by vLLM's AsyncLLM; with rollout.name=hf use rollout.mode=sync" in text
    assert "reward_manager='dapo'" in text and "ulysses_sequence_parallel_size=2" in text


def test_what_rlcamp_or_this_machine_lacks_is_a_blocker_not_a_config_problem():
    # valid lines for other hardware or a later rlcamp: the dry run passes, a run stops on these
    tp = ok("actor_rollout_ref.rollout.name=sglang", "actor_rollout_ref.rollout.tensor_model_parallel_size=2",
            "trainer.n_gpus_per_node=2").blockers
    assert any("tensor_model_parallel_size=2 with rollout.name=sglang: rlcamp runs one SGLang engine per device" in b
               for b in tp)
    offload = ("actor_rollout_ref.actor.strategy=megatron", "actor_rollout_ref.actor.megatron.param_offload=True",
               "actor_rollout_ref.actor.megatron.optimizer_offload=True", "actor_rollout_ref.actor.megatron.grad_offload=True",
               "trainer.n_gpus_per_node=2")
    assert not ok(*offload).blockers  # real on an accelerator (rlcamp.engines.offload); said to do nothing on the CPU
    from rlcamp.config import build_config
    from rlcamp.config.support import no_effect_warnings

    keys = frozenset(k.split("=")[0] for k in offload)
    loaded = build_config(list(offload) + ["trainer.device=cpu"])
    text = "\n".join(no_effect_warnings(loaded.config, keys))
    assert "param_offload=True has no effect: on the CPU the weights are in host memory already" in text
    assert "optimizer_offload=True has no effect: on the CPU the optimizer state is in host memory already" in text
    assert "grad_offload=True has no effect: the engine frees every gradient after its optimizer step" in text
    assert not ok("actor_rollout_ref.actor.strategy=megatron", "actor_rollout_ref.actor.megatron.context_parallel_size=2",
                  "trainer.n_gpus_per_node=2").blockers  # context parallelism runs
    assert any("context_parallel_size=2 with pipeline_model_parallel_size=2" in p for p in problems(
        "actor_rollout_ref.actor.strategy=megatron", "actor_rollout_ref.actor.megatron.context_parallel_size=2",
        "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2", "trainer.n_gpus_per_node=4"))
    assert not ok("actor_rollout_ref.actor.strategy=megatron").blockers  # tensor parallel (1 here) runs
    assert not ok("actor_rollout_ref.actor.strategy=megatron", "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2",
                  "actor_rollout_ref.actor.megatron.override_transformer_config.num_layers_in_last_pipeline_stage=1",
                  "trainer.n_gpus_per_node=2").blockers
    assert not ok().blockers
    assert any("unknown logger 'tensorbored'" in p for p in problems("trainer.logger=[tensorbored]"))


def test_megatron_layouts_are_checked_against_devices_and_the_reference():
    megatron = ("actor_rollout_ref.actor.strategy=megatron", "trainer.n_gpus_per_node=4", "data.train_batch_size=8",
                "actor_rollout_ref.actor.ppo_mini_batch_size=4")
    derived = ok(*megatron, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2",
                 "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2").derived
    assert derived.dp_size == 1  # 2 x 2 model-parallel ranks hold one copy
    text = "\n".join(problems(*megatron, "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2",
                              "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=3"))
    assert "not divisible by actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2 x " \
           "pipeline_model_parallel_size=3" in text
    text = "\n".join(problems(*megatron, "actor_rollout_ref.actor.megatron.virtual_pipeline_model_parallel_size=2",
                              "actor_rollout_ref.actor.use_kl_loss=True",
                              "actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2",
                              "actor_rollout_ref.actor.megatron.override_transformer_config.num_layers_in_first_pipeline_stage=0"))
    assert "virtual_pipeline_model_parallel_size=2: interleaved stages need pipeline_model_parallel_size > 1" in text
    assert "ref.megatron.pipeline_model_parallel_size=2 differs from the actor's 1" in text
    assert "num_layers_in_first_pipeline_stage=0 must be a positive number of layers" in text
    assert any("expert_model_parallel_size=3 x expert_tensor_parallel_size=1 does not divide the 4 ranks" in p
               for p in problems(*megatron, "actor_rollout_ref.actor.megatron.expert_model_parallel_size=3"))
    # use_dist_checkpointing reads dist_checkpointing_path: without it the path means nothing, and vice versa
    assert any("use_dist_checkpointing=True needs actor_rollout_ref.actor.megatron.dist_checkpointing_path" in p
               for p in problems(*megatron, "actor_rollout_ref.actor.megatron.use_dist_checkpointing=True"))
    idle = ok(*megatron, "actor_rollout_ref.actor.megatron.dist_checkpointing_path=/ckpt").warnings
    assert any("dist_checkpointing_path" in w and "read with use_dist_checkpointing=True" in w for w in idle)
    used = ok(*megatron, "actor_rollout_ref.actor.megatron.dist_checkpointing_path=/ckpt",
              "actor_rollout_ref.actor.megatron.use_dist_checkpointing=True")
    assert not used.blockers and not any("actor.megatron.dist_checkpointing_path" in w for w in used.warnings)
    # sequence_parallel splits the sequence between TP regions: said to do nothing where there are none
    # (TP=1) or where the stages keep activations whole (PP > 1)
    sp = "actor_rollout_ref.actor.megatron.sequence_parallel=True"
    tp2 = "actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2"
    for layout, idle in (((tp2,), False), ((), True), ((tp2, "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2"), True)):
        said = any("actor.megatron.sequence_parallel" in w for w in ok(*megatron, sp, *layout).warnings)
        assert said == idle, layout


def test_ulysses_degrees_are_checked_against_devices_and_each_other():
    base = ("trainer.n_gpus_per_node=4", "data.train_batch_size=8", "actor_rollout_ref.actor.ppo_mini_batch_size=4")
    derived = ok(*base, "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2").derived
    # 4 prompts x rollout.n=4 over 2 data-parallel ranks (not 4 devices)
    assert derived.dp_size == 2 and derived.actor.mini_batch_responses_per_device == 8
    text = "\n".join(problems(*base, "actor_rollout_ref.actor.ulysses_sequence_parallel_size=2",
                              "actor_rollout_ref.ref.ulysses_sequence_parallel_size=4",
                              "critic.ulysses_sequence_parallel_size=3"))
    assert "ref.ulysses_sequence_parallel_size=4 differs from actor.ulysses_sequence_parallel_size=2" in text
    assert "not divisible by critic.ulysses_sequence_parallel_size=3" in text


def test_checkpoint_contents_are_checked():
    text = "\n".join(problems("actor_rollout_ref.actor.checkpoint.save_contents=[model,optimiser]",
                              "critic.checkpoint.save_contents=[hf_model]",
                              "critic.checkpoint.load_contents=[model,optimizer]"))
    assert "actor_rollout_ref.actor.checkpoint.save_contents has unknown part(s) ['optimiser']" in text
    assert "critic.checkpoint.load_contents asks for 'optimizer', which critic.checkpoint.save_contents" in text
    assert "asks for 'model'" not in text  # weights come back from the HF folder
    ok("critic.checkpoint.save_contents=[hf_model]", "critic.checkpoint.load_contents=[model]")


def test_kl_twice_is_a_warning_not_an_error():
    warnings = ok("algorithm.use_kl_in_reward=True", "actor_rollout_ref.actor.use_kl_loss=True").warnings
    assert any("penalised twice" in w for w in warnings)


def test_a_failed_actor_plan_is_reported_once():
    found = problems("trainer.n_gpus_per_node=2", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=16")
    assert any("8 responses per device per mini batch" in p and "ppo_micro_batch_size_per_gpu=16" in p for p in found)
    assert not any("log_prob_micro_batch_size_per_gpu is not set" in p for p in found)


def _cpu_without_bf16_kernels(monkeypatch):
    import torch

    from rlcamp.utils import device

    monkeypatch.setattr(device, "cpu_matmul_is_fast", lambda dtype: dtype == torch.float32)
    monkeypatch.setattr(device, "cpu_features", lambda: "AVX2")


def test_low_precision_defaults_become_fp32_on_a_cpu_without_bf16_kernels(monkeypatch):
    _cpu_without_bf16_kernels(monkeypatch)
    resolved = ok("trainer.device=cpu")
    arr, critic = resolved.config.actor_rollout_ref, resolved.config.critic
    assert arr.rollout.dtype == "fp32" and arr.actor.fsdp_config.mixed_precision.param_dtype == "fp32"
    assert critic.model.fsdp_config.mixed_precision.param_dtype == "fp32"
    (warning,) = resolved.warnings
    assert "(AVX2; they need AVX-512 or AMX)" in warning and "actor_rollout_ref.rollout.dtype=bfloat16" in warning


def test_a_low_precision_the_user_set_is_kept_with_a_warning(monkeypatch):
    _cpu_without_bf16_kernels(monkeypatch)
    resolved = ok("trainer.device=cpu", "actor_rollout_ref.rollout.dtype=bf16", "critic.model.dtype=fp16")
    assert resolved.config.actor_rollout_ref.rollout.dtype == "bf16" and resolved.config.critic.model.dtype == "fp16"
    kept = [w for w in resolved.warnings if "kept as set" in w]
    assert len(kept) == 1 and "critic.model.dtype=fp16, actor_rollout_ref.rollout.dtype=bf16 kept" in kept[0]
    # vLLM brings its own kernels: its dtype is its business
    vllm = ok("trainer.device=cpu", "actor_rollout_ref.rollout.name=vllm", "actor_rollout_ref.rollout.dtype=bf16",
              "actor_rollout_ref.rollout.tensor_model_parallel_size=1")
    assert vllm.config.actor_rollout_ref.rollout.dtype == "bf16"
    assert not any("rollout.dtype" in w for w in vllm.warnings)


def test_precision_is_left_alone_where_bf16_is_fast_or_off_the_cpu(monkeypatch):
    import torch

    from rlcamp.utils import device

    monkeypatch.setattr(device, "cpu_matmul_is_fast", lambda dtype: True)
    resolved = ok("trainer.device=cpu")
    assert resolved.config.actor_rollout_ref.rollout.dtype == "bfloat16" and not resolved.warnings
    _cpu_without_bf16_kernels(monkeypatch)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert ok("trainer.device=cuda").config.actor_rollout_ref.rollout.dtype == "bfloat16"
    assert ok("trainer.device=auto").config.actor_rollout_ref.rollout.dtype == "bfloat16"


def test_override_ddp_config_reads_megatron_fsdp_and_refuses_the_rest():
    """use_megatron_fsdp + data_parallel_sharding_strategy=optim_grads_params: the engine splits the decoder
    layers over the data-parallel ranks (FSDP2); other strategies and entries are named."""
    from rlcamp.engines.megatron import layout

    megatron = ("actor_rollout_ref.actor.strategy=megatron", "trainer.n_gpus_per_node=2")
    fsdp = ("+actor_rollout_ref.actor.megatron.override_ddp_config.use_megatron_fsdp=True",
            "+actor_rollout_ref.actor.megatron.override_ddp_config.data_parallel_sharding_strategy=optim_grads_params")
    resolved = ok(*megatron, *fsdp)
    assert not resolved.blockers
    actor = resolved.config.actor_rollout_ref.actor.megatron
    assert layout(actor, "actor_rollout_ref.actor")["fsdp"]
    assert not layout(ok(*megatron).config.actor_rollout_ref.actor.megatron, "actor_rollout_ref.actor")["fsdp"]
    text = "\n".join(ok(*megatron, "+actor_rollout_ref.actor.megatron.override_ddp_config.bucket_size=4",
                        "+actor_rollout_ref.actor.megatron.override_ddp_config.data_parallel_sharding_strategy="
                        "optim_grads").blockers)
    assert "override_ddp_config.bucket_size=4: rlcamp's Megatron engine is not megatron-core's DDP" in text
    assert "(optim_grads, gradients split without the weights, is not built)" in text
    assert "is read with use_megatron_fsdp=True" in text
    staged = "\n".join(ok(*megatron, *fsdp, "actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2").blockers)
    assert "runs with pipeline_model_parallel_size=1 and context_parallel_size=1 so far" in staged
