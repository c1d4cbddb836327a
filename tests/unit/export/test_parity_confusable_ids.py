"""Export-time parity of the confusable ids (``hetexport.onnx.parity.confusable_ids_agree``):
where a top class moves, ONNX Runtime's ids must be the m largest reference shares (ties
allowed); where both runtimes serve no movement for it, they are a fixed order and must be
PyTorch's, whatever the float64 reference shares would rank at the variance floor."""

from __future__ import annotations

import torch
from hetexport.onnx.parity import SHARE_TOLERANCE, confusable_ids_agree

TOP = torch.tensor([[0, 1]])  # one image, top classes 0 and 1 of K = 5
SHARES = torch.tensor([[[0.0, 0.1, 0.6, 0.2, 0.1],    # class 0 moves to 2, then 3
                        [0.5, 0.0, 0.0, 0.1, 0.4]]],  # class 1 moves to 0, then 4
                      dtype=torch.float64)
RANKED = torch.tensor([[[2, 3], [0, 4]]])
MOVING = torch.tensor([[False, False]])


def test_ids_that_rank_the_reference_shares_agree():
    assert confusable_ids_agree(SHARES, TOP, RANKED, RANKED, still=MOVING)


def test_an_id_whose_share_ties_is_accepted_and_any_other_is_not():
    shares = SHARES.clone()
    shares[0, 0, 4] = 0.2 + SHARE_TOLERANCE / 2  # class 4 ties with class 3 for class 0
    assert confusable_ids_agree(shares, TOP, torch.tensor([[[2, 4], [0, 4]]]), RANKED,
                                still=MOVING)
    assert not confusable_ids_agree(SHARES, TOP, torch.tensor([[[3, 2], [0, 4]]]), RANKED,
                                    still=MOVING)


def test_an_unmoved_class_keeps_pytorchs_fixed_order_whatever_float64_would_rank():
    """Class 0 sits at the variance floor: float32 serves no movement in both runtimes (ids in
    the graph's fixed order), float64 still ranks classes 2 and 3 first."""
    fixed = torch.tensor([[[1, 2], [0, 4]]])
    still = torch.tensor([[True, False]])
    assert confusable_ids_agree(SHARES, TOP, fixed, fixed, still=still)
    assert not confusable_ids_agree(SHARES, TOP, fixed, fixed, still=MOVING)
    assert not confusable_ids_agree(SHARES, TOP, fixed, torch.tensor([[[2, 1], [0, 4]]]),
                                    still=still)
