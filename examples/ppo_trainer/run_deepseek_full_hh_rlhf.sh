#!/usr/bin/env bash
# PPO on hh-rlhf against a reward model, DeepSeek-LLM-7B-Chat, Megatron
#
# Model:    deepseek-ai/deepseek-llm-7b-chat (actor), deepseek-ai/deepseek-llm-7b-chat (critic), deepseek-ai/deepseek-llm-7b-chat (reward_model)
# Data:     full_hh_rlhf/rl/train.parquet
# Hardware: 1 node(s) x 8 GPUs; Megatron; rollout vllm, tensor parallel 4
# Special:  Megatron engine; a reward model scores every response (no rule reward)
# Memory:   rlcamp plan sizes FSDP runs; it does not size Megatron layouts yet
# Source:   verl's examples/ppo_trainer/run_deepseek_full_hh_rlhf.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
# Status:   runs on rlcamp's Megatron engine (tensor, pipeline, expert and data parallel; see
#           README.md, 'Training engines'); its smoke run keeps each parallel degree at 2.
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/hh_rlhf.py --local_dataset_path <hh-rlhf jsonl files> --local_dir $DATA_DIR/full_hh_rlhf/rl
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_deepseek_full_hh_rlhf.sh
# Check the full line here:           bash examples/ppo_trainer/run_deepseek_full_hh_rlhf.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-deepseek-ai/deepseek-llm-7b-chat}
RM_PATH=${RM_PATH:-deepseek-ai/deepseek-llm-7b-chat}

python3 -m rlcamp.trainer.main_ppo \
    --config-path=./config \
    --config-name=ppo_megatron_trainer \
    algorithm.adv_estimator=gae \
    "data.train_files=$DATA_DIR/full_hh_rlhf/rl/train.parquet" \
    "data.val_files=$DATA_DIR/full_hh_rlhf/rl/train.parquet" \
    data.train_batch_size=512 \
    data.max_prompt_length=128 \
    data.max_response_length=128 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=128 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=4 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.4 \
    critic.optim.lr=1e-5 \
    "critic.model.path=$MODEL_PATH" \
    critic.ppo_micro_batch_size_per_gpu=4 \
    reward_model.enable=True \
    "reward_model.model.path=$RM_PATH" \
    reward_model.use_reward_loop=True \
    reward_model.rollout.name=vllm \
    reward_model.rollout.gpu_memory_utilization=0.8 \
    reward_model.rollout.tensor_model_parallel_size=4 \
    reward_model.rollout.prompt_length=256 \
    reward_model.rollout.response_length=128 \
    reward_model.num_workers=8 \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    'trainer.logger=["console","wandb"]' \
    trainer.project_name=verl_megatron_full_hh_rlhf_examples \
    trainer.experiment_name=deepseek_llm_7b_model_rm \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=1 \
    trainer.save_freq=20 \
    trainer.test_freq=5 \
    trainer.total_epochs=100 \
    "$@"
