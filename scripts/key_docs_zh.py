"""Chinese explanations of the keys the work-order folder uses (the guide's key table, second half).

Looked up by the whole key, else by the key without its leading parts (``optim.lr`` serves the
actor's and the critic's). English comes from the schema's own docs (``rlcamp config keys``)."""

ZH = {
    # models and parallelism
    "actor_rollout_ref.model.path": "actor 的 HF 模型本地目录（联网时也可以是 hub 名称）。",
    "critic.model.path": "critic 主干模型的本地目录；不设则用 actor 的 model.path。",
    "reward_model.model.path": "序列分类奖励模型的本地目录。",
    "model.trust_remote_code": "允许运行模型自带的远程代码。",
    "model.enable_gradient_checkpointing": "反向时重算激活以节省显存。",
    "model.use_remove_padding": "在模型支持时去掉填充、把序列紧密打包（varlen）。",
    "model.use_fused_kernels": "不生成完整 logits，直接从隐藏状态计算 log-prob 与熵（torch：rlcamp 的分块 head；triton：融合 GPU 核）；False 为完整 logits（verl 默认）。",
    "model.fused_kernel_options.impl_backend": "融合核的实现：torch（任意设备上的分块矩阵乘）或 triton（Triton 核，需 CUDA；TRITON_INTERPRET=1 可在 CPU 上解释运行，很慢）。",
    "fsdp_config.param_offload": "两次使用之间把参数放在 CPU 内存中。",
    "fsdp_config.optimizer_offload": "两次更新之间把优化器状态放在 CPU 内存中。",
    "megatron.tensor_model_parallel_size": "Megatron 张量并行度。",
    "megatron.pipeline_model_parallel_size": "Megatron 流水线并行度。",
    "megatron.context_parallel_size": "Megatron 上下文并行度。",
    "megatron.expert_model_parallel_size": "Megatron 专家并行度（MoE）。",
    "megatron.expert_tensor_parallel_size": "专家内部的张量并行度。",
    "megatron.param_offload": "两次使用之间把参数卸载到 CPU。",
    "megatron.grad_offload": "两次使用之间把梯度卸载到 CPU。",
    "megatron.optimizer_offload": "两次更新之间把优化器状态卸载到 CPU。",
    "megatron.use_dist_checkpointing": "从 Megatron 分布式检查点（dist_checkpointing_path）而不是 HF 目录加载初始权重。",
    "megatron.dist_checkpointing_path": "该分布式检查点的目录（由 verl 的 scripts/converter_hf_to_mcore.py 生成）。",
    "megatron.override_transformer_config.num_layers_in_last_pipeline_stage": "（自由字典）最后一个流水线阶段的层数，交给 Megatron 的 TransformerConfig。",
    "ulysses_sequence_parallel_size": "Ulysses 序列并行度（1 为关闭）：长序列切分到多张卡。",
    # batches and optimisation
    "actor.ppo_mini_batch_size": "每个 PPO 小批的提示数（乘以 rollout.n 个回答），每个小批一次优化器更新。只有一个小批且只训一轮时，PPO 比率取更新自身的对数概率（detach）相除，恰为 1（与 verl 相同）。",
    "actor.ppo_micro_batch_size_per_gpu": "单卡每次前向/反向的回答数（梯度累积）。",
    "critic.ppo_micro_batch_size_per_gpu": "单卡每次 critic 前向/反向的回答数。",
    "ppo_max_token_len_per_gpu": "use_dynamic_bsz 时单卡一个微批的 token 预算。",
    "use_dynamic_bsz": "按 token 预算而不是固定条数填充微批（序列均衡）。",
    "optim.lr": "AdamW 的峰值学习率。",
    "optim.lr_warmup_steps_ratio": "预热步数占总训练步数的比例。",
    "optim.lr_decay_style": "verl Megatron 优化器的学习率调度（预热之后）：linear、cosine、inverse-square-root 或 WSD"
                            "（先保持峰值学习率，最后 lr_wsd_decay_steps 步降到 min_lr）；非 constant 时取代 lr_scheduler_type。",
    "optim.lr_wsd_decay_steps": "WSD：最后多少步把学习率降到 min_lr。",
    "optim.lr_wsd_decay_style": "WSD：最后衰减的形状（exponential、linear、cosine、minus_sqrt）。",
    "actor.use_kl_loss": "在 actor 损失中加入 KL(actor || reference) 项（GRPO 风格）。",
    "actor.use_torch_compile": "用 torch.compile 编译 log-prob / 熵的辅助函数。",
    "ref.log_prob_micro_batch_size_per_gpu": "单卡每次 reference 前向的回答数。",
    # rollout
    "rollout.name": "推理引擎：hf（rlcamp 自带）、vllm 或 sglang。",
    "rollout.n": "每个提示采样的回答数（GRPO/RLOO 的组大小）。",
    "rollout.temperature": "采样温度。",
    "rollout.tensor_model_parallel_size": "一个推理引擎跨越的设备数（rlcamp 自带引擎用 torch 张量并行切分模型）；推理数据并行度 = 设备数 / 此值。",
    "rollout.gpu_memory_utilization": "引擎可占用的设备显存比例（权重 + KV cache）。",
    "rollout.log_prob_micro_batch_size_per_gpu": "单卡每次计算旧 log-prob 的回答数。",
    "rollout.log_prob_max_token_len_per_gpu": "计算旧 log-prob 时单卡的 token 预算。",
    "rollout.log_prob_use_dynamic_bsz": "计算旧 log-prob 时按 token 预算切分微批。",
    "rollout.max_num_batched_tokens": "引擎每轮调度的 token 数。",
    "rollout.max_num_seqs": "引擎同时运行的序列数。",
    "rollout.enable_chunked_prefill": "把长的 prefill 切块执行。",
    "rollout.enforce_eager": "关闭引擎的 CUDA graph。",
    "rollout.mode": "sync：一次批量生成；async：不等待落后请求的服务循环（张量并行 > 1 时按 sync 生成，有警告说明）。",
    "rollout.multi_turn.format": "对话模板的工具调用格式（verl：hermes）。",
    # algorithm
    "algorithm.adv_estimator": "优势估计器：gae（PPO，需要 critic）、grpo、rloo、reinforce_plus_plus 等。",
    "algorithm.kl_ctrl.kl_coef": "奖励中 KL 项的（初始）系数。",
    "algorithm.use_kl_in_reward": "从 token 奖励中减去 KL(actor || reference) 惩罚。",
    "algorithm.use_pf_ppo": "按奖励重采样每批（PF-PPO，Zhang 等 2025）。",
    "algorithm.pf_ppo.reweight_method": "PF-PPO 由分数得到样本权重的方法。",
    "algorithm.pf_ppo.weight_pow": "pow 方法的指数。",
    # data
    "data.train_files": "训练提示文件（parquet 或 jsonl，verl 格式）；字符串或列表。",
    "data.val_files": "验证提示文件（parquet 或 jsonl，verl 格式）；字符串或列表。",
    "data.train_batch_size": "每个训练步的提示数（每个采样 rollout.n 次）。",
    "data.max_prompt_length": "套用对话模板后提示的最大 token 数。",
    "data.max_response_length": "推理生成的回答的最大 token 数。",
    "data.filter_overlong_prompts": "加载时丢弃长于 max_prompt_length 的提示。",
    "data.truncation": "提示过长时的处理：error，或保留其左/右/中间截断的部分。",
    "data.return_raw_chat": "同时返回原始对话消息（async / 多轮推理需要）。",
    "data.shuffle": "每个 epoch 打乱训练提示，种子为 data.seed。",
    "data.trust_remote_code": "允许运行 data.tokenizer 分词器的远程代码。",
    # rewards
    "custom_reward_function.reward_kwargs.format_score": "（自由字典）传给评分函数的参数：格式正确但答案错误时的部分分。",
    "custom_reward_function.reward_kwargs.marked_score":
        "（自由字典）rlcamp/arith 评分的参数：最后一个 \"####\" 之后的最后一个数字正确、但不符合严格格式时的部分分（如 \"#### 4 * 6 = 24\"；小于 1，验证准确率不计）。",
    "reward_model.enable": "用学习得到的奖励模型给回答打分。",
    "reward_model.micro_batch_size_per_gpu": "单卡每次奖励模型前向的序列数。",
    "reward_model.num_workers": "奖励循环中并发准备并打分的 worker 数。",
    "reward_model.reward_manager": "规则分数的计算方式：naive（逐个）或 prime（并行）。",
    "reward_model.use_reward_loop": "通过引擎（reward_model.rollout）提供奖励模型服务，训练继续进行时打分；False：在训练进程内打分（verl 的旧路径）。",
    "reward_model.rollout.name": "提供奖励模型服务的引擎：hf（rlcamp 自带，任意设备）或 vllm（池化模型）。",
    "reward_model.rollout.gpu_memory_utilization": "奖励模型引擎可占用的设备显存比例。",
    "reward_model.rollout.tensor_model_parallel_size": "奖励模型引擎的张量并行度。",
    "reward_model.rollout.prompt_length": "引擎接受的最长提示（按奖励模型的模板）。",
    "reward_model.rollout.response_length": "引擎接受的最长回答。",
    "reward_model.sandbox_fusion.url": "兼容 SandboxFusion 的运行代码服务地址；不设则用内嵌沙箱。",
    "reward_model.sandbox_fusion.max_concurrent": "同时运行的程序数。",
    # profiling
    "profiler.enable": "在 global_profiler.steps 指定的步中分析该角色。",
    "profiler.all_ranks": "分析该角色的所有 rank。",
    "profiler.ranks": "all_ranks 为 False 时要分析的 rank（为空：rank 0）。",
    "global_profiler.tool": "分析器：torch（Chrome 轨迹）、torch_memory（分配器快照）、nsys（Nsight Systems，需 nsys 与 CUDA）、npu（昇腾）；不设为关闭。",
    "global_profiler.steps": "要分析的训练步（从 1 开始）；不设或 [] 为不分析。",
    "global_profiler.profile_continuous_steps": "把 global_profiler.steps 中连续的步记录为一条轨迹。",
    "global_profiler.global_tool_config.nsys.discrete": "（工具设置）nsys 为每个阶段单独记录一个 NVTX 范围。",
    # trainer
    "trainer.device": "加速器：auto 依次选择 cuda、npu、cpu。",
    "trainer.n_gpus_per_node": "每台机器的设备数（CPU 上为每台机器的进程数）。",
    "trainer.nnodes": "作业中的机器数。",
    "trainer.total_epochs": "遍历训练提示的次数。",
    "trainer.total_training_steps": "训练这么多步后停止（比 total_epochs 少时优先）。",
    "trainer.save_freq": "每隔多少步保存检查点（-1：只在结束时保存）。",
    "trainer.test_freq": "每隔多少步验证（-1：只在结束时验证）。",
    "trainer.val_before_train": "第一步之前先验证一次。",
    "trainer.critic_warmup": "actor 开始训练之前只训练 critic 的步数。",
    "trainer.logger": "实验跟踪器：console、file、wandb、tensorboard、mlflow、swanlab、trackio、clearml（运行目录总会有 metrics.jsonl）。",
    "trainer.log_val_generations": "每次验证记录的样本数（输入、输出、参考答案、分数），写入支持表格的跟踪器与控制台。",
    "trainer.project_name": "项目名，用于跟踪器和运行目录。",
    "trainer.experiment_name": "实验名，用于跟踪器和运行目录。",
    "trainer.max_actor_ckpt_to_keep": "最多保留多少个 actor 检查点（不设：全部保留）。",
    "trainer.max_critic_ckpt_to_keep": "最多保留多少个 critic 检查点（不设：全部保留）。",
    "trainer.use_legacy_worker_impl": "verl：在旧的 fsdp/megatron worker 与新的引擎 worker 之间选择；rlcamp 只有一种实现。",
}

# keys inside free-form settings (no schema entry): English explanations
FREE_EN = {
    "actor_rollout_ref.actor.megatron.override_transformer_config.num_layers_in_last_pipeline_stage":
        "(free-form) layers of the last pipeline stage, handed to Megatron's TransformerConfig.",
    "custom_reward_function.reward_kwargs.format_score":
        "(free-form) an argument of the scoring function: partial credit for a well-formed wrong answer.",
    "custom_reward_function.reward_kwargs.marked_score":
        "(free-form) an argument of the rlcamp/arith scorer: partial credit (below 1, so not counted by val/acc) "
        "when the last number after the last \"####\" is right but does not read strictly (\"#### 4 * 6 = 24\").",
    "global_profiler.global_tool_config.nsys.discrete": "(tool setting) nsys records each stage as its own NVTX range.",
}


def zh(key: str) -> str | None:
    parts = key.split(".")
    for i in range(len(parts)):
        found = ZH.get(".".join(parts[i:]))
        if found:
            return found
    return None
