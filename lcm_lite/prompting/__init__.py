"""Prompts as people write them for Stable Diffusion: A1111's attention syntax (``attention``) and
prompts longer than CLIP's 77 tokens, encoded in chunks and weighted (``chunks``), as diffusers'
community long-prompt-weighting pipeline (``lpw_stable_diffusion.py``) does."""
