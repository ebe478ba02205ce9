"""``lcm-lite quantize``: 8-bit post-training quantization of a model folder's UNet with NNCF's
OpenVINO backend (the ``[quantize]`` extra; no torch): calibration inputs recorded by lcm-lite's
own pipeline (``calibration``), the UNet's weights and activations quantized (``unet``), the rest
of the folder copied unchanged (``folder``)."""

EXTRA_MODULES = ("nncf",)
DEFAULT_SIZE = 512
DEFAULT_STEPS = 4
DEFAULT_SAMPLES = 64  # 16 prompts of 4 steps: the built-in prompts once
# NNCF's quantization presets: activations asymmetric (the OpenVINO LCM notebook's, NNCF's default
# for transformers) or symmetric (no zero points: faster kernels, and on AMX a faster import)
PRESETS = ("mixed", "performance")
DEFAULT_PRESET = "mixed"
