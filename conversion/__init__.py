"""Optional torch/diffusers side of lcm-lite: export an LCM to OpenVINO IR, build random LCMs.

``conversion.export.convert`` exports, ``conversion.random_model.build_random_lcm`` builds test
models. This module imports nothing, so ``conversion.clip_vocab`` works without torch.
"""
