#!/usr/bin/env bash
# PPO on GSM8K, DeepSeek-LLM-7B-Chat, Megatron, Nsight profile
#
# Model:    deepseek-ai/deepseek-llm-7b-chat (actor), deepseek-ai/deepseek-llm-7b-chat (critic)
# Data:     gsm8k/train.parquet
# Hardware: 1 node(s) x 8 GPUs; Megatron; rollout vllm, tensor parallel 2
# Special:  global_profiler.tool=nsys over named steps
# Memory:   rlcamp plan sizes FSDP runs; it does not size Megatron layouts yet
# Source:   verl's examples/ppo_trainer/run_deepseek_math_gsm8k_megatron_nsys.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
# Status:   runs on rlcamp's Megatron engine (tensor, pipeline, expert and data parallel; see
#           README.md, 'Training engines'); its smoke run keeps each parallel degree at 2.
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_deepseek_math_gsm8k_megatron_nsys.sh
# Check the full line here:           bash examples/ppo_trainer/run_deepseek_math_gsm8k_megatron_nsys.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/deepseek-llm-7b-chat}

python3 -m rlcamp.trainer.main_ppo \
    --config-path=./config \
    --config-name=ppo_megatron_trainer \
    algorithm.adv_estimator=gae \
    "data.train_files=$DATA_DIR/gsm8k/train.parquet" \
    "data.val_files=$DATA_DIR/gsm8k/test.parquet" \
    data.train_batch_size=256 \
    data.max_prompt_length=1024 \
    data.max_response_length=512 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=64 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2 \
    actor_rollout_ref.actor.megatron.tensor_model_parallel_size=2 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.actor.profiler.enable=True \
    'actor_rollout_ref.actor.profiler.ranks=[0,4]' \
    actor_rollout_ref.actor.profiler.all_ranks=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=2 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.8 \
    actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2 \
    actor_rollout_ref.ref.megatron.tensor_model_parallel_size=2 \
    critic.optim.lr=1e-5 \
    "critic.model.path=$MODEL_PATH" \
    critic.ppo_micro_batch_size_per_gpu=4 \
    critic.profiler.enable=True \
    'critic.profiler.ranks=[0,4]' \
    critic.profiler.all_ranks=False \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    'trainer.logger=["console","wandb"]' \
    trainer.project_name=verl_ppo_gsm8k_math_examples \
    trainer.experiment_name=deepseek_llm_7b_megatron \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=-1 \
    trainer.test_freq=-1 \
    trainer.total_epochs=100 \
    trainer.total_training_steps=1 \
    global_profiler.tool=nsys \
    'global_profiler.steps=[1]' \
    global_profiler.global_tool_config.nsys.discrete=True \
    "$@"
