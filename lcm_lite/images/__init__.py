"""Pictures in and out, NumPy and Pillow only: diffusers' ``load_image`` and
``VaeImageProcessor.preprocess`` (``preprocess``), its ``postprocess`` (``postprocess``), and PNG
files with their generation metadata (``png``)."""
