"""GSM8K -> train.parquet / test.parquet in verl's RL schema.

    python examples/data_preprocess/gsm8k.py --local_dataset_path ../shared/data/gsm8k --local_dir ~/data/gsm8k

Without --local_dataset_path it reads openai/gsm8k from the hub (needs internet and `datasets`).
"""

import argparse

from rlcamp.data.preprocess import GSM8K_SOURCE, convert_splits, gsm8k_row, hub_splits, local_splits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", help="folder with train/test .jsonl or .parquet (question, answer)")
    parser.add_argument("--local_dir", default="~/data/gsm8k", help="where train.parquet and test.parquet go")
    args = parser.parse_args(argv)
    source = args.local_dataset_path or GSM8K_SOURCE
    splits = local_splits(args.local_dataset_path) if args.local_dataset_path else hub_splits(GSM8K_SOURCE, "main")
    convert_splits(splits, gsm8k_row, args.local_dir, source)


if __name__ == "__main__":
    main()
