"""Exact answers to compare a served head with, and the head's error against them.

* ``integral``: ``exact_answer``, the reference integrals (randomized QMC in the rank-reduced
  space of the latent Gaussian, with its own standard error);
* ``error``: ``served_error``, every served quantity against the reference: mean and 99th
  percentile over images;
* ``sample_count``: ``choose_samples``, the smallest S whose measured error meets a target.
"""
