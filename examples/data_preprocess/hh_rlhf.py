"""Anthropic hh-rlhf -> parquet in verl's RL schema, for training against a reward model.

    python examples/data_preprocess/hh_rlhf.py --local_dataset_path ~/downloads/hh-rlhf --local_dir ~/data/hh_rlhf

The folder holds train/test .jsonl(.gz) files of {"chosen": "\\n\\nHuman: ...\\n\\nAssistant: ...",
"rejected": ...}. Each prompt is the conversation before the last assistant turn; rewards come
from reward_model.enable=True reward_model.model.path=<a sequence-classification RM>.
Without --local_dataset_path it reads Anthropic/hh-rlhf from the hub.
"""

import argparse

from rlcamp.data.preprocess import HH_SOURCE, convert_splits, hh_rlhf_row, hub_splits, local_splits


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", help="folder (or file) with chosen/rejected rows")
    parser.add_argument("--local_dir", default="~/data/hh_rlhf", help="where the parquet files go")
    args = parser.parse_args(argv)
    splits = local_splits(args.local_dataset_path) if args.local_dataset_path else hub_splits(HH_SOURCE)
    convert_splits(splits, hh_rlhf_row, args.local_dir, args.local_dataset_path or HH_SOURCE)


if __name__ == "__main__":
    main()
