"""MATH -> train.parquet / test.parquet in verl's RL schema (ground truth = last \\boxed{}).

    python examples/data_preprocess/math_dataset.py --local_dataset_path ../shared/data/math500 --local_dir ~/data/math

Without --local_dataset_path it reads DigitalLearningGmbH/MATH-lighteval from the hub.
A local MATH-500 copy (question/answer fields) is tagged HuggingFaceH4/MATH-500.
"""

import argparse

from rlcamp.data.preprocess import (MATH500_SOURCE, MATH_SOURCE, convert_splits, hub_splits, local_splits,
                                    math_row)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--local_dataset_path", help="folder or file with problem/solution (or question/answer)")
    parser.add_argument("--local_dir", default="~/data/math", help="where the parquet files go")
    parser.add_argument("--data_source", default=None, help="data_source tag (default: by where the data came from)")
    args = parser.parse_args(argv)
    if args.local_dataset_path:
        splits = local_splits(args.local_dataset_path)
        default_source = MATH500_SOURCE if "500" in args.local_dataset_path else MATH_SOURCE
    else:
        splits, default_source = hub_splits(MATH_SOURCE, "default"), MATH_SOURCE
    source = args.data_source or default_source
    convert_splits(splits, math_row, args.local_dir, args.local_dataset_path or MATH_SOURCE, data_source=source)


if __name__ == "__main__":
    main()
