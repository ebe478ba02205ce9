"""Sampling math, NumPy only: the LCM scheduler (``scheduler``), the guidance-scale embedding
(``guidance_embedding``), classifier-free guidance (``classifier_free``) and torch's random
numbers (``torch_rng``). Nothing here reads a file or runs a network."""
