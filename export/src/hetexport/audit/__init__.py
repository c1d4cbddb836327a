"""Label audit of a training set with out-of-sample probabilities from k-fold models
(``hetexport audit``); the scoring and the CSV are ``hetcontract``'s, shared with
``hetclient audit``."""

from hetexport.audit.kfold import (
    DEFAULT_FOLDS,
    OutOfSample,
    fold_assignment,
    out_of_sample_probs,
)

__all__ = ["DEFAULT_FOLDS", "OutOfSample", "fold_assignment", "out_of_sample_probs"]
