"""Exact answers to compare a served head with, and the head's error against them.

* ``integral``: ``exact_answer``, the reference integrals (randomized QMC in the rank-reduced
  space of the latent Gaussian, with its own standard error);
* ``error``: ``served_error``, every served quantity against the reference: mean and 99th
  percentile over images;
* ``measure``: ``reference_for`` a model's images once, ``head_error`` of any bank against it;
* ``bank_search``: ``search_bank``, the scrambling seed that integrates a model's latents best.
"""
