"""Pieces shared by the rollout engines."""

import torch

from rlcamp.rollout.engines import mask_through_first_eos


def test_mask_runs_through_the_first_eos_only():
    # eos ids 1 and 2; row 0 ends at position 3, row 1 at its second EOS-kind token's first (pos 1),
    # row 2 has no EOS (all kept), row 3 starts with one (only it kept)
    responses = torch.tensor([[20, 10, 34, 1, 0, 0, 0],
                              [78, 2, 76, 1, 1, 0, 0],
                              [23, 98, 5, 6, 7, 8, 9],
                              [1, 3, 98, 45, 1, 0, 0]])
    assert mask_through_first_eos(responses, [1, 2]).tolist() == [[1, 1, 1, 1, 0, 0, 0],
                                                                 [1, 1, 0, 0, 0, 0, 0],
                                                                 [1, 1, 1, 1, 1, 1, 1],
                                                                 [1, 0, 0, 0, 0, 0, 0]]
