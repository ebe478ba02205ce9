"""Optional torch/diffusers side of lcm-lite: export an LCM to OpenVINO IR, build random LCMs.

``conversion.export.convert`` exports, ``conversion.random_model.build_random_lcm`` builds test
models. This module imports nothing heavy, so ``conversion.clip_vocab`` works without torch; it
only quiets transformers' import-time warnings (e.g. "requires torchvision"), which would
otherwise break the one-line messages of ``lcm-lite-convert`` (an explicit setting wins).
"""

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

WEIGHT_FORMATS = ("fp32", "fp16", "int8")
