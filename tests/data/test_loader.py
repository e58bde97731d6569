import torch

from rlcamp.data import PromptLoader, PromptSample, ResumableSampler, collate_prompts


def sample(ids, truth="1"):
    return PromptSample(input_ids=ids, raw_prompt=[{"role": "user", "content": "x"}], data_source="gsm8k",
                        ground_truth=truth, extra_info={}, ability=None, source="f: row 0")


def take(sampler, n_batches):
    out = []
    while len(out) < n_batches:
        for batch in sampler:
            out.append(batch)
            if len(out) == n_batches:
                break
    return out


def test_seeded_shuffle_is_deterministic_and_differs_per_epoch():
    a, b = ResumableSampler(10, 3, seed=7), ResumableSampler(10, 3, seed=7)
    assert len(a) == 3  # drop_last: 10 // 3
    ea, eb = take(a, 6), take(b, 6)
    assert ea == eb
    assert ea[:3] != ea[3:6]
    assert all(len(set(sum(ea[i:i + 3], []))) == 9 for i in (0, 3))  # no repeats within an epoch
    assert take(ResumableSampler(10, 3, seed=8), 3) != ea[:3]
    assert take(ResumableSampler(10, 3, shuffle=False), 1) == [[0, 1, 2]]


def test_resume_mid_epoch_and_at_epoch_boundary_gives_the_same_batches():
    reference = take(ResumableSampler(11, 2, seed=3), 12)  # 5 batches per epoch
    for stop in (2, 5, 7):  # mid-epoch, exactly at the boundary, mid second epoch
        first = ResumableSampler(11, 2, seed=3)
        seen = take(first, stop)
        resumed = ResumableSampler(11, 2, seed=3)
        resumed.load_state_dict(first.state_dict())
        assert seen + take(resumed, 12 - stop) == reference, stop


def test_resume_refuses_a_changed_dataset():
    state = ResumableSampler(11, 2, seed=3).state_dict()
    other = ResumableSampler(12, 2, seed=3)
    try:
        other.load_state_dict(state)
    except ValueError as exc:
        assert "size=11" in str(exc) and "size=12" in str(exc)
    else:
        raise AssertionError("a changed dataset size must not resume silently")


def test_collate_left_pads():
    batch = collate_prompts([sample([5, 6, 7]), sample([8])], pad_token_id=0)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [0, 0, 8]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["position_ids"].tolist() == [[0, 1, 2], [0, 0, 0]]
    assert batch["ground_truth"] == ["1", "1"] and batch["data_source"] == ["gsm8k", "gsm8k"]


def test_prompt_loader_state_round_trip():
    data = [sample([i + 1], truth=str(i)) for i in range(9)]
    loader = PromptLoader(data, 2, pad_token_id=0, seed=1)
    it = iter(loader)
    first = [next(it)["ground_truth"] for _ in range(2)]
    state = loader.state_dict()
    rest = [b["ground_truth"] for b in it]
    again = PromptLoader(data, 2, pad_token_id=0, seed=1)
    again.load_state_dict(state)
    assert [b["ground_truth"] for b in again] == rest and len(first + rest) == 4
    assert loader.epoch == 1 and isinstance(next(iter(loader))["input_ids"], torch.Tensor)


def test_worker_processes_give_the_same_batches_and_resume_points():
    """data.dataloader_num_workers: DataLoader workers collate ahead, yet the trainer sees the same
    batches in the same order, and the saved position counts only the batches it was handed."""
    dataset = [sample([1, 2, i], truth=str(i)) for i in range(20)]
    plain = PromptLoader(dataset, 4, pad_token_id=0, seed=3)
    workers = PromptLoader(dataset, 4, pad_token_id=0, seed=3, num_workers=2)
    seen = {"plain": [], "workers": []}
    for name, loader in (("plain", plain), ("workers", workers)):
        for i, batch in enumerate(loader):  # stop mid-epoch, as a step count may
            seen[name].append(batch["ground_truth"])
            if i == 2:
                break
    assert workers.state_dict() == plain.state_dict() == {"epoch": 0, "position": 3, "seed": 3, "size": 20,
                                                          "batch_size": 4}
    resumed = PromptLoader(dataset, 4, pad_token_id=0, seed=3, num_workers=2)
    resumed.load_state_dict(workers.state_dict())
    for name, loader in (("plain", plain), ("workers", resumed)):
        for _ in range(2):  # the rest of epoch 0, then all of epoch 1
            seen[name] += [b["ground_truth"] for b in loader]
    assert seen["plain"] == seen["workers"] and len(seen["plain"]) == 10
    assert torch.equal(next(iter(resumed))["input_ids"], next(iter(plain))["input_ids"])
