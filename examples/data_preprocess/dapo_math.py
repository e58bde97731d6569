"""BytedTsinghua-SIA/DAPO-Math-17k -> one parquet file, for the NPU work order (run_qwen3-8b_npu.sh).

    python examples/data_preprocess/dapo_math.py --local_dataset_path ~/downloads/dapo-math-17k.parquet \\
        --local_file ~/data/dapo-math-17k.parquet

The file is already in verl's RL schema (data_source=math_dapo, scored by rlcamp.rewards.dapo: +1
for the right "Answer: ..." line, -1 otherwise); each row is checked, and repeated prompts are
dropped (the published file holds each of its ~17k problems about 100 times; --keep_repeats keeps
them). Without --local_dataset_path it reads the dataset from the hub (needs internet and `datasets`).
"""

import argparse

from rlcamp.data.files import read_records
from rlcamp.data.preprocess import convert, hub_splits, unique_prompts, verl_row, write_parquet

SOURCE = "BytedTsinghua-SIA/DAPO-Math-17k"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", help="the dataset's .parquet or .jsonl file")
    parser.add_argument("--local_file", default="~/data/dapo-math-17k.parquet", help="the parquet file to write")
    parser.add_argument("--keep_repeats", action="store_true", help="keep repeated prompts")
    args = parser.parse_args(argv)
    if args.local_dataset_path:
        records = read_records(args.local_dataset_path)
    else:
        records = [r for split in hub_splits(SOURCE).values() for r in split]
    rows = convert(records, verl_row, "train", args.local_dataset_path or SOURCE)
    kept = rows if args.keep_repeats else unique_prompts(rows)
    path = write_parquet(kept, args.local_file)
    print(f"wrote {len(kept)} rows ({len(rows) - len(kept)} repeats dropped) to {path}")


if __name__ == "__main__":
    main()
