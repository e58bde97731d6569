#!/usr/bin/env bash
# PPO on GSM8K, Moonlight-16B-A3B (DeepSeek-V3-style MoE), 4 nodes, Megatron
#
# Model:    moonshotai/Moonlight-16B-A3B-Instruct (actor), moonshotai/Moonlight-16B-A3B-Instruct (critic)
# Data:     gsm8k/train.parquet
# Hardware: 4 node(s) x 8 GPUs; Megatron; rollout vllm, tensor parallel 4
# Special:  MoE with expert parallel on 32 GPUs
# Memory:   rlcamp plan sizes FSDP runs; it does not size Megatron layouts yet
# Source:   verl's examples/ppo_trainer/run_moonlight16b_a3b_gsm8k_megatron.sh at b178a3c: the same keys and values, only the
#           module name differs (python3 -m rlcamp.trainer.main_ppo).
# Status:   runs on rlcamp's Megatron engine (tensor, pipeline, expert and data parallel; see
#           README.md, 'Training engines'); its smoke run keeps each parallel degree at 2.
#
# Prepare the data (from local copies; see examples/ppo_trainer/README.md):
#   python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir $DATA_DIR/gsm8k
# Try it scaled down on a CPU first:  rlcamp smoke examples/ppo_trainer/run_moonlight16b_a3b_gsm8k_megatron.sh
# Check the full line here:           bash examples/ppo_trainer/run_moonlight16b_a3b_gsm8k_megatron.sh --dry-run
set -euo pipefail
DATA_DIR=${DATA_DIR:-$HOME/data}
MODEL_PATH=${MODEL_PATH:-moonshotai/Moonlight-16B-A3B-Instruct}

python3 -m rlcamp.trainer.main_ppo \
    --config-path=./config \
    --config-name=ppo_megatron_trainer \
    algorithm.adv_estimator=gae \
    "data.train_files=$DATA_DIR/gsm8k/train.parquet" \
    "data.val_files=$DATA_DIR/gsm8k/test.parquet" \
    data.train_batch_size=1024 \
    data.max_prompt_length=1024 \
    data.max_response_length=512 \
    data.filter_overlong_prompts=True \
    data.truncation=error \
    data.trust_remote_code=True \
    "actor_rollout_ref.model.path=$MODEL_PATH" \
    actor_rollout_ref.actor.optim.lr=1e-6 \
    actor_rollout_ref.actor.ppo_mini_batch_size=256 \
    actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4 \
    actor_rollout_ref.actor.use_kl_loss=False \
    actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2 \
    actor_rollout_ref.rollout.name=vllm \
    actor_rollout_ref.rollout.gpu_memory_utilization=0.7 \
    critic.optim.lr=1e-5 \
    "critic.model.path=$MODEL_PATH" \
    critic.ppo_micro_batch_size_per_gpu=4 \
    algorithm.use_kl_in_reward=False \
    trainer.critic_warmup=0 \
    'trainer.logger=["console","wandb"]' \
    trainer.project_name=verl_megatron_gsm8k_examples \
    trainer.experiment_name=moonlight_16b_a3b_instruct_1node \
    trainer.n_gpus_per_node=8 \
    trainer.nnodes=4 \
    trainer.save_freq=-1 \
    trainer.test_freq=5 \
    actor_rollout_ref.model.trust_remote_code=True \
    critic.model.trust_remote_code=True \
    +actor_rollout_ref.actor.megatron.override_transformer_config.num_layers_in_last_pipeline_stage=13 \
    actor_rollout_ref.rollout.tensor_model_parallel_size=4 \
    actor_rollout_ref.actor.megatron.pipeline_model_parallel_size=2 \
    actor_rollout_ref.ref.megatron.pipeline_model_parallel_size=2 \
    critic.megatron.pipeline_model_parallel_size=2 \
    actor_rollout_ref.actor.megatron.tensor_model_parallel_size=8 \
    actor_rollout_ref.ref.megatron.tensor_model_parallel_size=8 \
    critic.megatron.tensor_model_parallel_size=8 \
    actor_rollout_ref.actor.megatron.expert_model_parallel_size=8 \
    actor_rollout_ref.ref.megatron.expert_model_parallel_size=8 \
    critic.megatron.expert_model_parallel_size=8 \
    actor_rollout_ref.actor.megatron.expert_tensor_parallel_size=1 \
    actor_rollout_ref.ref.megatron.expert_tensor_parallel_size=1 \
    critic.megatron.expert_tensor_parallel_size=1 \
    actor_rollout_ref.actor.megatron.param_offload=False \
    actor_rollout_ref.actor.megatron.optimizer_offload=False \
    actor_rollout_ref.actor.megatron.grad_offload=False \
    actor_rollout_ref.ref.megatron.param_offload=False \
    critic.megatron.param_offload=False \
    critic.megatron.optimizer_offload=False \
    critic.megatron.grad_offload=False \
    actor_rollout_ref.actor.megatron.use_dist_checkpointing=True \
    actor_rollout_ref.ref.megatron.use_dist_checkpointing=True \
    critic.megatron.use_dist_checkpointing=True \
    actor_rollout_ref.actor.megatron.dist_checkpointing_path=/data/mcore_ckpt/Moonlight-16B-A3B-Instruct \
    actor_rollout_ref.ref.megatron.dist_checkpointing_path=/data/mcore_ckpt/Moonlight-16B-A3B-Instruct \
    critic.megatron.dist_checkpointing_path=/data/mcore_ckpt/Moonlight-16B-A3B-Instruct \
    trainer.val_before_train=False \
    trainer.total_epochs=100 \
    "$@"
