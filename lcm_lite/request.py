"""One generation request, declared once.

``Request`` holds every field a call may set, each with its default, and a ``Spec`` with its help
text, its limits, its kind and its names elsewhere. The pipeline takes a ``Request`` (the keyword
call ``pipe(prompt, steps=...)`` builds one); the command line's options (``cli.common``), the
server's request models (``server.schemas``), the PNG metadata and the remake command are derived
from these declarations (``fields``). A new field is one entry here plus its use.

The checks are diffusers' limits, and the inputs diffusers would silently mis-handle, as one-line
``UsageError``s before anything is loaded or run. ``LoadOptions`` declares what loading a model
takes (``LCMPipeline.from_pretrained``'s keywords) the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lcm_lite.errors import UsageError
from lcm_lite.fields import (
    STAGES,
    Devices,
    Range,
    Spec,
    check_prompts,
    check_value,
    spec,
    specs,
)
from lcm_lite.fields import from_metadata as fields_from_metadata

if TYPE_CHECKING:
    import numpy as np

    from lcm_lite.images.preprocess import Picture

LORA_MODES = ("auto", "fixed", "runtime")  # LoadOptions.lora_mode; see pipeline.lora_blend
DEFAULT_SIZE = 512
MAX_SIZE = 2048
MAX_IMAGES = 16
SEED_LIMIT = 2**64


def _side(name: str) -> Spec:
    """``width`` or ``height``: a multiple of 8 (diffusers' VAE needs it)."""
    return Spec(
        f"image {name}, a multiple of 8",
        "integer",
        key=name,
        limits=Range(8, MAX_SIZE, 8),
        served=Range(64, 1024, 8),
        default_help=f"{DEFAULT_SIZE}, or the picture's own",
        fallback=DEFAULT_SIZE,
    )


@dataclass(frozen=True)
class Request:
    """What one generation asks for: diffusers' ``LatentConsistencyModelPipeline`` arguments
    (and its img2img twin's), with lcm-lite's ``vae``. ``Request(...).check()`` rejects what
    diffusers would reject with one clear sentence."""

    prompt: str | Sequence[str] = field(
        metadata={
            "spec": Spec(
                "the text prompt (with --image it may be empty: variations)",
                "text",
                key="prompt",
                option="",  # positional on the command line
                openai="prompt",
            )
        }
    )
    _: KW_ONLY
    negative_prompt: str | Sequence[str] | None = spec(
        Spec(
            "what to steer away from: Stable Diffusion models with LCM-LoRA, at guidance above 1 "
            "(a latent consistency model refuses it: its guidance is distilled)",
            "text",
            key="negative_prompt",
            metavar="TEXT",
            openai="negative_prompt",
        )
    )
    image: Picture | Sequence[Picture] | None = spec(
        Spec(
            "start from this picture (PNG, JPEG or WebP): image to image",
            "picture",
            key="image",
            metavar="FILE",
        )
    )
    mask_image: Picture | Sequence[Picture] | None = spec(
        Spec(
            "inpainting: repaint the picture only where this mask is white (black: keep), a "
            "picture of the picture's shape, binarized at half gray as diffusers",
            "picture",
            key="mask",
            metavar="FILE",
            needs="image",
        )
    )
    mask_blur: int | None = spec(
        Spec(
            "inpainting: blur the mask by this Gaussian radius in pixels before it is resized and "
            "binarized (diffusers' VaeImageProcessor.blur: it rounds the mask's shape)",
            "integer",
            key="mask_blur",
            metavar="PIXELS",
            limits=Range(0, 1024),
            needs="mask_image",
        )
    )
    padding_mask_crop: int | None = spec(
        Spec(
            "inpainting a small area of a big picture: make the image for the box around the "
            "mask, grown by this many pixels and to the width:height shape, then paste it back "
            "into the picture, which keeps its size (diffusers' padding_mask_crop)",
            "integer",
            key="padding_mask_crop",
            metavar="PIXELS",
            limits=Range(0, MAX_SIZE),
            needs="mask_image",
        )
    )
    outpaint: Sequence[int] | None = spec(
        Spec(
            "outpainting: extend the picture by LEFT,TOP,RIGHT,BOTTOM pixels and paint the new "
            "margins (edge pixels repeated for the encoder; a --mask paints inside too); best "
            "at --strength 1",
            "integers",
            key="outpaint",
            metavar="LEFT,TOP,RIGHT,BOTTOM",
            limits=Range(0, MAX_SIZE),
            served=Range(0, 1024),
            needs="image",
            count=4,
        )
    )
    strength: float = spec(
        Spec(
            "image to image: how much to change the picture, 0 < X <= 1; at least steps / 50 "
            "(the steps come from the last int(50 * strength) of the 50 distillation timesteps); "
            "inpainting (--mask): int(steps * strength) of the steps run, as diffusers'",
            "number",
            key="strength",
            limits=Range(0.0, 1.0, low_exclusive=True),
            openai="strength",
            needs="image",
        ),
        0.8,
    )
    steps: int = spec(
        Spec(
            "LCM steps",
            "integer",
            key="steps",
            limits=Range(1),
            served=Range(1, 8),
            openai="num_inference_steps",
        ),
        4,
    )
    guidance_scale: float = spec(
        Spec(
            "guidance scale, diffusers' convention",
            "number",
            key="guidance",
            limits=Range(0.0),
            served=Range(0.0, 20.0),
            openai="guidance_scale",
        ),
        8.0,
    )
    width: int | None = spec(_side("width"))
    height: int | None = spec(_side("height"))
    num_images: int = spec(
        Spec(
            "images per prompt",
            "integer",
            key="num_images",
            limits=Range(1, MAX_IMAGES),
            served=Range(1, 4),
        ),
        1,
    )
    seed: int | None = spec(
        Spec(
            "0 .. 2**64-1, as torch.Generator().manual_seed",
            "integer",
            key="seed",
            limits=Range(
                0, SEED_LIMIT, high_exclusive=True, described="an integer from 0 to 2**64-1"
            ),
            openai="rng_seed",
            default_help="random (below 2**53)",
        )
    )
    original_inference_steps: int | None = spec(
        Spec(
            "length of the distillation schedule the steps are taken from",
            "integer",
            key="original_inference_steps",
            served_over_http=False,
            default_help="the model's, 50",
        )
    )
    timesteps: Sequence[int] | None = spec(
        Spec(
            "custom descending timesteps, e.g. 999,759,499,259 (instead of steps)",
            "integers",
            key="custom_timesteps",
            option="--timesteps",
            served_over_http=False,
        )
    )
    vae: Literal["full", "tiny"] = spec(
        Spec(
            "final decoder: the model's VAE, or the tiny VAE (TAESD: faster, softer, not the "
            "full VAE's image; with an image it encodes the picture too)",
            "choice",
            key="vae",
            choices=("full", "tiny"),
            openai="vae",
        ),
        "full",
    )
    lora_weights: Sequence[float] | None = spec(
        Spec(
            "the weight of each LoRA loaded (--lora), in their order, e.g. 0.8,0 (0: off), as "
            "diffusers' set_adapters; with --lora-mode runtime (or auto after the first change) "
            "no compile",
            "numbers",
            key="lora_weights",
            metavar="W1,W2,...",
            openai="lora_weights",
            default_help="the weights given with --lora",
        )
    )
    prompt_weighting: bool = spec(
        Spec(
            "read the prompts as AUTOMATIC1111 does: (word:1.4), (word) x1.1, [word] /1.1, \\( "
            "for a bracket; and up to 225 tokens instead of 77 (diffusers' community "
            "long-prompt-weighting encoding)",
            "flag",
            key="prompt_weighting",
            openai="prompt_weighting",
        ),
        False,
    )
    clip_skip: int | None = spec(
        Spec(
            "condition on the text encoder's hidden state this many layers before the last "
            "(diffusers' clip_skip: 1 is AUTOMATIC1111's 'Clip skip: 2')",
            "integer",
            key="clip_skip",
            limits=Range(0, described="an integer from 0 to the text encoder's layers"),
            default_help="none",
        )
    )
    prompt_embeds: np.ndarray | None = spec(
        Spec(
            "the text embeddings (batch, 77 * chunks, hidden) instead of the prompts (then ''), "
            "as diffusers' prompt_embeds; the metadata says they were given",
            "array",
            key="prompt_embeds",
            served_over_http=False,
        )
    )
    negative_prompt_embeds: np.ndarray | None = spec(
        Spec(
            "with prompt_embeds under classifier-free guidance: the negative prompts' "
            "embeddings, of prompt_embeds' shape",
            "array",
            key="negative_prompt_embeds",
            served_over_http=False,
            needs="prompt_embeds",
        )
    )
    control_image: Picture | Sequence[Picture] | None = spec(
        Spec(
            "ControlNet: the control picture (edges, pose, depth... as the ControlNet was trained "
            "on), one per ControlNet loaded (--controlnet; a server: serve --controlnet)",
            "picture",
            key="control_image",
            metavar="FILE",
            repeatable=True,
        )
    )
    # the ControlNet fields' openai names: lcm-lite's extension of images/edits (with control_image
    # files in its form)
    control_preprocess: Literal["canny", "gray", "invert"] | None = spec(
        Spec(
            "ControlNet: make the control picture from a photo: canny (edges, for a Canny "
            "ControlNet), gray, invert (a black-on-white sketch to white lines on black)",
            "choice",
            key="control_preprocess",
            openai="control_preprocess",
            choices=("canny", "gray", "invert"),  # images.annotators.ANNOTATORS (not imported:
            # it needs NumPy and Pillow, which the request's users may not load)
            needs="control_image",
            default_help="none: the picture is the control picture",
        )
    )
    canny_thresholds: Sequence[float] | None = spec(
        Spec(
            "ControlNet: Canny's low,high thresholds on the 3x3 Sobel gradient |Gx|+|Gy|, as "
            "OpenCV's cv2.Canny(image, low, high)",
            "numbers",
            key="canny_thresholds",
            openai="canny_thresholds",
            limits=Range(0.0, 2040.0),
            needs="control_preprocess",
            default_help="100,200",
        )
    )
    controlnet_conditioning_scale: float | Sequence[float] | None = spec(
        Spec(
            "ControlNet: how strongly the residuals steer, one number or one per ControlNet",
            "numbers",
            key="controlnet_conditioning_scale",
            openai="controlnet_conditioning_scale",
            option="--control-scale",
            limits=Range(0.0, 5.0),
            served=Range(0.0, 2.0),
            needs="control_image",
            default_help="each ControlNet's own (--controlnet DIR:SCALE), 1.0",
        )
    )
    control_guidance_start: float = spec(
        Spec(
            "ControlNet: the fraction of the steps after which it starts steering",
            "number",
            key="control_guidance_start",
            openai="control_guidance_start",
            option="--control-start",
            limits=Range(0.0, 1.0),
            needs="control_image",
        ),
        0.0,
    )
    control_guidance_end: float = spec(
        Spec(
            "ControlNet: the fraction of the steps after which it stops steering",
            "number",
            key="control_guidance_end",
            openai="control_guidance_end",
            option="--control-end",
            limits=Range(0.0, 1.0),
            needs="control_image",
        ),
        1.0,
    )
    guess_mode: bool = spec(
        Spec(
            "ControlNet: steer the conditional half only under classifier-free guidance, the "
            "residuals scaled from 0.1 (shallow) to 1 (deep), as diffusers' guess_mode",
            "flag",
            key="guess_mode",
            openai="guess_mode",
            needs="control_image",
        ),
        False,
    )
    latents: np.ndarray | None = spec(
        Spec("the starting latents (batch, 4, height / 8, width / 8) instead of noise", "array")
    )

    @property
    def prompts(self) -> list[str]:
        """The prompts, one or a list, as a list."""
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def check(self) -> None:
        """Reject what diffusers would reject (or silently mis-handle) with one clear sentence.
        Numbers may be any ``numbers.Integral`` / ``numbers.Real`` (NumPy's too), never a bool."""
        if not isinstance(self.prompt, (str, list, tuple)):
            raise UsageError(
                f"prompt must be a string or a list of strings, got {self.prompt!r:.40}"
            )
        check_prompts(self.prompts)
        if isinstance(self.negative_prompt, (list, tuple)):
            check_prompts(list(self.negative_prompt))
        elif isinstance(self.negative_prompt, str):
            check_prompts([self.negative_prompt])
        if self.mask_image is not None and self.image is None:
            raise UsageError("mask_image needs image: the picture whose masked area to repaint")
        if self.outpaint is not None and self.image is None:
            raise UsageError("outpaint needs image: the picture to extend")
        defaults = {item.name: item.default for item in fields(self)}
        for name, field_spec in specs(type(self)).items():
            value = getattr(self, name)
            if field_spec.needs and getattr(self, field_spec.needs) is None:
                continue
            optional = defaults[name] is None
            check_value(name, field_spec, value, field_spec.limits, optional)
        if (
            self.control_image is not None
            and self.control_guidance_start >= self.control_guidance_end
        ):
            raise UsageError(
                f"control_guidance_start ({self.control_guidance_start}) must be below "
                f"control_guidance_end ({self.control_guidance_end})"
            )


def from_metadata(
    metadata: Mapping[str, str], request_type: type = Request
) -> tuple[Request, dict[str, Any]]:
    """The request that ``metadata`` (as read back from a PNG: text) records, and the
    ``LoadOptions`` fields it records (model, tiny VAE, LoRAs)."""
    return fields_from_metadata(metadata, request_type, LoadOptions)


@dataclass(frozen=True)
class LoadOptions:
    """What loading a model takes (``LCMPipeline.from_pretrained``'s keywords) beside the cache
    and memory policy; ``model``, ``tiny_vae``, ``controlnet`` and ``loras`` are recorded in the
    metadata."""

    model: str | Path | None = spec(
        Spec(
            "local model folder or hub id",
            "text",
            key="model",
            default_help="OpenVINO/LCM_Dreamshaper_v7-int8-ov, downloaded once",
        )
    )
    revision: str | None = spec(
        Spec("hub revision (branch, tag or commit) of --model", "text", option="--revision")
    )
    tiny_vae: str | Path | None = spec(
        Spec(
            "tiny VAE (TAESD) folder or hub id, for --vae tiny and previews",
            "text",
            key="tiny_vae",
            metavar="DIR|HUB_ID",
            default_help="the model's own tiny decoder, or with --vae tiny rupeshs/taesd-ov, "
            "downloaded once",
        )
    )
    device: str | Mapping[str, str] | Devices = spec(
        Spec(
            "OpenVINO device: CPU, GPU, GPU.1, NPU, AUTO, AUTO:GPU,CPU, HETERO:...; or one per"
            " stage, e.g. text_encoder=NPU,unet=GPU,vae_decoder=CPU (stages: "
            + ", ".join(STAGES)
            + "; a stage not named runs on CPU)",
            "devices",
            option="--device",
            metavar="DEVICE",
        ),
        "CPU",
    )
    precision: str | None = spec(
        Spec(
            "inference precision hint (f32 for exact parity)",
            "choice",
            option="--precision",
            choices=("f32", "bf16", "f16"),
            default_help="the device's",
        )
    )
    controlnet: str | Path | Sequence[str | Path | tuple[str | Path, float]] | None = spec(
        Spec(
            "a ControlNet (converted with lcm-lite-convert) and its conditioning scale (default "
            "1.0); repeat for several, whose residuals add up. Each needs a --control-image",
            "loras",
            key="controlnets",
            option="--controlnet",
            metavar="DIR|HUB_ID[:SCALE]",
        )
    )
    loras: Sequence[tuple[str | Path, float]] | None = spec(
        Spec(
            "a LoRA adapter (.safetensors, kohya or diffusers/PEFT) and its weight (default 1.0);"
            " repeat to blend several. An LCM-LoRA (latent-consistency/lcm-lora-sdv1-5) runs any"
            " Stable Diffusion 1.5 model in 4 steps",
            "loras",
            key="loras",
            option="--lora",
            metavar="FILE|HUB_ID[:WEIGHT]",
        )
    )
    lora_mode: str = spec(
        Spec(
            "how the LoRAs' weights enter the networks: compiled in (fixed: a new blend is a new "
            "compile), as an input (runtime: --lora-weights changes the blend with no compile), or "
            "auto (fixed until a call asks for other weights, then runtime)",
            "choice",
            option="--lora-mode",
            choices=LORA_MODES,
        ),
        "auto",
    )
