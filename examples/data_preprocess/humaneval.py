"""HumanEval (or stdin/stdout problems) -> parquet in verl's RL schema, scored by running code.

    python examples/data_preprocess/humaneval.py --local_dataset_path ../shared/data/humaneval/HumanEval.jsonl.gz \
        --local_dir ~/data/humaneval
    python examples/data_preprocess/humaneval.py --format stdio --local_dataset_path problems.jsonl --local_dir ~/data/code

HumanEval rows need task_id, prompt, test, entry_point; stdio rows need question and
cases: [{stdin, stdout}]. Without --local_dataset_path HumanEval is read from the hub
(openai/openai_humaneval, needs internet and `datasets`). Rewards: the code scorer, through
reward_model.sandbox_fusion.url (or the embedded sandbox).
"""

import argparse

from rlcamp.data.preprocess import (HUMANEVAL_SOURCE, convert_splits, hub_splits, humaneval_row, local_splits,
                                    stdio_row)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", help="a .jsonl / .jsonl.gz / .parquet file, or a folder of splits")
    parser.add_argument("--local_dir", default="~/data/humaneval", help="where the parquet files go")
    parser.add_argument("--format", choices=["humaneval", "stdio"], default="humaneval")
    args = parser.parse_args(argv)
    make_row = humaneval_row if args.format == "humaneval" else stdio_row
    if args.local_dataset_path:
        splits = local_splits(args.local_dataset_path)
    elif args.format == "humaneval":
        splits = hub_splits(HUMANEVAL_SOURCE)
    else:
        parser.error("--format stdio needs --local_dataset_path")
    convert_splits(splits, make_row, args.local_dir, args.local_dataset_path or HUMANEVAL_SOURCE)


if __name__ == "__main__":
    main()
