"""PRIME-RL/Eurus-2-RL-Data -> train.parquet / validation.parquet, the code rows the sandbox work order
(run_deepseek7b_llm_sandbox_fusion.sh) trains on.

    python examples/data_preprocess/eurus_code.py --local_dataset_path ~/downloads/Eurus-2-RL-Data \\
        --local_dir ~/data/Eurus-2-RL-Data

The folder holds the dataset's train / validation parquet files, already in verl's RL schema; each
row is checked (data_source, prompt messages, reward_model.ground_truth: the inputs/outputs JSON
the code scorer runs in the sandbox). By default only code rows (ability == "code") are kept;
--keep_math keeps the math rows too (scored by the math scorer). Without --local_dataset_path it
reads PRIME-RL/Eurus-2-RL-Data from the hub (needs internet and `datasets`).
"""

import argparse

from rlcamp.data.preprocess import convert, hub_splits, local_splits, verl_row, write_parquet

SOURCE = "PRIME-RL/Eurus-2-RL-Data"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", help="folder with train*/validation* .parquet or .jsonl files")
    parser.add_argument("--local_dir", default="~/data/Eurus-2-RL-Data", help="where the parquet files go")
    parser.add_argument("--keep_math", action="store_true", help="keep the math rows as well as the code rows")
    args = parser.parse_args(argv)
    splits = (local_splits(args.local_dataset_path, ("train", "validation")) if args.local_dataset_path
              else hub_splits(SOURCE))
    for split, records in splits.items():
        rows = convert(records, verl_row, split, args.local_dataset_path or SOURCE)
        kept = [r for r in rows if args.keep_math or r.get("ability") == "code"]
        path = write_parquet(kept, f"{args.local_dir}/{split}.parquet")
        print(f"wrote {len(kept)} of {len(rows)} rows to {path}")


if __name__ == "__main__":
    main()
