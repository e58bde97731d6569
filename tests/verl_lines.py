"""verl's examples/ppo_trainer launch lines (tests/fixtures/verl_ppo_trainer/launch_lines.json), with
their model and data paths pointed at tiny local stand-ins: the only values a user changes."""

from __future__ import annotations

import json
from pathlib import Path

from rlcamp.data.files import read_records
from rlcamp.data.preprocess import write_parquet
from rlcamp.models.tiny import build_tiny_model
from rlcamp.workorders.stand_ins import data_kind, tiny_rows

FIXTURE = Path(__file__).parent / "fixtures/verl_ppo_trainer/launch_lines.json"


def launch_lines() -> dict[str, dict]:
    return json.loads(FIXTURE.read_text())["scripts"]


def materialize(name: str, root: Path) -> tuple[list[str], dict[str, str]]:
    """The launch line of verl's ``name`` with tiny models and data under ``root``; (args, env)."""
    line = launch_lines()[name]
    models, data = root / "models", root / "data"
    args = []
    for arg in line["args"]:
        arg = arg.replace("{models}", str(models)).replace("{data}", str(data))
        args.append(arg)
    for family in {a.split("{models}/", 1)[1].split("'")[0] for a in line["args"] if "{models}/" in a}:
        folder = models / family
        if not (folder / "config.json").exists():
            base, _, kind = family.partition("-")
            # 4 KV heads (as many as attention heads): the lines' tensor-parallel sizes (up to 4 for the
            # models rlcamp splits) divide them, as they divide the real models'
            # Moonlight's line (DeepSeek-V3 layers) splits heads and experts 8 ways and cuts 13 of its 27 layers
            # into the last pipeline stage: its stand-in has as many
            sizes = dict(num_attention_heads=8, num_key_value_heads=8, n_routed_experts=8, n_group=2,
                         num_hidden_layers=27) if base == "deepseek_v3" else dict(num_key_value_heads=4)
            build_tiny_model(folder, base, reward_model=kind == "rm", **sizes)
    # as many prompts as one step takes, so the line's batch sizes hold as written
    batch = int(next(a for a in line["args"] if a.startswith("data.train_batch_size=")).split("=")[1])
    for arg in line["args"]:
        for part in arg.split("{data}/")[1:]:
            relative = part.split("'")[0]
            path = data / relative
            if not path.exists() or len(read_records(path)) < batch:
                write_parquet(tiny_rows(data_kind(relative), batch), path)
    return args, dict(line["env"])
