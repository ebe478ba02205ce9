"""The pipeline: ``LCMPipeline`` orchestrates tokenize -> encode -> latents -> steps -> decode
over the layers below it; ``results`` holds what a call gives back (``StepInfo``,
``GenerationResult``)."""

from lcm_lite.pipeline.lcm_pipeline import LCMPipeline, StageProgress
from lcm_lite.pipeline.results import GenerationResult, StepInfo

__all__ = ["LCMPipeline", "StageProgress", "GenerationResult", "StepInfo"]
