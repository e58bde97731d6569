"""The reward model: re-templating with its own tokenizer, micro batching, and combination with rules."""

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlcamp.config import build_config, resolve
from rlcamp.data import read_records
from rlcamp.models.tiny import build_tiny_model
from rlcamp.trainer.build import build_trainer
from rlcamp.trainer.validation import prompt_batch
from rlcamp.workers.reward_model import RewardModelWorker
from tests.helpers import make_tiny_setup, tiny_run_overrides

CONVERSATIONS = [
    {"chosen": "\n\nHuman: How do I boil an egg?\n\nAssistant: Put it in boiling water for 8 minutes.",
     "rejected": "\n\nHuman: How do I boil an egg?\n\nAssistant: No."},
    {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2 + 2?\n\nAssistant: 4.",
     "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: What is 2 + 2?\n\nAssistant: 5."},
]


@pytest.fixture
def rm_path(tmp_path):
    return build_tiny_model(tmp_path / "rm", "llama", reward_model=True)


def test_rm_retemplates_and_micro_batches(tmp_path, rm_path):
    config = build_config([f"reward_model.model.path={rm_path}", "reward_model.enable=True",
                           f"reward_model.model.input_tokenizer={rm_path}"]).config
    worker = RewardModelWorker(config, micro_batch=2)
    prompts = [[{"role": "user", "content": f"What is {i} + 1?"}] for i in range(5)]
    responses = [f"#### {i + 1}" for i in range(5)]
    assert worker.texts(prompts[:1], responses[:1]) == ["User: What is 0 + 1?\nAssistant: #### 1\n"]
    scores = worker.compute_rm_score(prompts, responses)
    model = AutoModelForSequenceClassification.from_pretrained(rm_path).eval()
    tok = AutoTokenizer.from_pretrained(rm_path)
    for i in range(5):
        ids = tok(worker.texts(prompts[i:i + 1], responses[i:i + 1]), return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            assert scores[i].item() == pytest.approx(model(**ids).logits[0, 0].item(), abs=1e-5)


def test_rm_score_is_added_to_rule_scores(tmp_path, rm_path):
    model, data = make_tiny_setup(tmp_path)
    overrides = tiny_run_overrides(model, data, tmp_path / "run", **{
        "reward_model.enable": True, "reward_model.model.path": rm_path, "trainer.total_training_steps": 1})
    trainer = build_trainer(resolve(build_config(overrides), 16), tmp_path / "run")
    prompts = next(iter(trainer.loader))
    batch = trainer.actor.call("generate", prompt_batch(prompts))
    rule, _, texts = trainer.scorer.manager(batch)
    combined = trainer.scorer(batch)
    rm = trainer.scorer.reward_model(batch)  # decoded with reward_model.model.input_tokenizer (the actor's, here)
    assert torch.allclose(combined.scores.sum(-1), rule.sum(-1) + rm, atol=1e-6)
    assert torch.equal(combined.rm, rm)
    assert "critic/rm_score/mean" in trainer.fit()


def test_token_budget_micro_batches_score_the_same(rm_path):
    line = [f"reward_model.model.path={rm_path}", "reward_model.enable=True", f"reward_model.model.input_tokenizer={rm_path}"]
    fixed = RewardModelWorker(build_config(line).config, micro_batch=2)
    budget = RewardModelWorker(build_config(line + ["reward_model.use_dynamic_bsz=True",
                                                    "reward_model.forward_max_token_len_per_gpu=40"]).config)
    prompts = [[{"role": "user", "content": "What is " + "1 + " * i + "1?"}] for i in range(6)]
    responses = [f"#### {i + 1}" for i in range(6)]
    parts = budget._micro_batches(budget.texts(prompts, responses))
    assert len(parts) > 1 and sorted(i for p in parts for i in p) == list(range(6))
    assert torch.allclose(budget.compute_rm_score(prompts, responses), fixed.compute_rm_score(prompts, responses),
                          atol=1e-5)


def test_hh_rlhf_prompts_train_against_the_rm_alone(tmp_path, rm_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    raw = tmp_path / "hh"
    raw.mkdir()
    (raw / "train.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS * 4))
    (raw / "test.jsonl").write_text("".join(json.dumps(c) + "\n" for c in CONVERSATIONS))
    subprocess.run([sys.executable, str(root / "examples/data_preprocess/hh_rlhf.py"), "--local_dataset_path", str(raw),
                    "--local_dir", str(tmp_path / "data")], check=True, capture_output=True)
    rows = read_records(tmp_path / "data" / "train.parquet")
    assert rows[1]["prompt"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                                 {"role": "user", "content": "What is 2 + 2?"}]
    model, _ = make_tiny_setup(tmp_path)
    overrides = tiny_run_overrides(model, tmp_path / "data", tmp_path / "run", **{
        "reward_model.enable": True, "reward_model.model.path": rm_path, "trainer.total_training_steps": 1,
        "data.train_batch_size": 4, "actor_rollout_ref.actor.ppo_mini_batch_size": 2,
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu": 2, "critic.ppo_micro_batch_size_per_gpu": 2})
    trainer = build_trainer(resolve(build_config(overrides), 8), tmp_path / "run")
    metrics = trainer.fit()  # Anthropic/hh-rlhf has no rule scorer: the RM alone scores it
    assert metrics["critic/score/mean"] == pytest.approx(metrics["critic/rm_score/mean"], abs=1e-5)
