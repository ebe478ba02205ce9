"""What the AUTOMATIC1111 API (``/sdapi/v1/...``) accepts and answers, as pydantic models.

The fields that have a ``Request`` field of their own are derived from its declaration
(``schemas.derived_fields``) under A1111's names (``A1111_NAMES``), with A1111's conventions
where they differ: ``prompt`` may be missing (""), ``negative_prompt`` "" is none, ``seed`` -1
is random, and ``steps`` above the served most are taken as that most (A1111 clients send 20
to 50; a latent consistency model takes 2 to 8) and said so in the answer's ``info``. Prompts
are read as A1111 reads them (``prompt_weighting``: ``(word:1.4)``, up to 225 tokens), and
``override_settings.CLIP_stop_at_last_layers`` (A1111's "Clip skip", 1 = none) is
``clip_skip`` (diffusers' convention: one less). ``<lora:NAME:WEIGHT>`` tags set the weights
of the LoRAs loaded with ``serve --lora`` (``lora_weights``). Fields A1111 has and lcm-lite does not
(``sampler_name``, ``scheduler``, ``restore_faces``, ``enable_hr``, the other
``override_settings``, ``alwayson_scripts``, ``send_images``, ``save_images``, ...) are
accepted and ignored, as clients send them whatever the server.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Annotated, Any, Literal

from annotated_types import Interval
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    create_model,
    model_validator,
)

from lcm_lite.fields import specs
from lcm_lite.prompting.lora_tags import tagged_weights, take_lora_tags
from lcm_lite.request import MAX_IMAGES, Request
from lcm_lite.sampling.torch_rng import random_seed
from lcm_lite.server.schemas import (
    SERVED,
    Picture,
    Prompt,
    decode_picture,
    derived_fields,
    json_type,
    served_limits,
    whole_number,
)

# Request field -> A1111 name (modules/api/models.py, StableDiffusionProcessingTxt2Img's fields)
A1111_NAMES = {
    "prompt": "prompt",
    "negative_prompt": "negative_prompt",
    "steps": "steps",
    "guidance_scale": "cfg_scale",
    "width": "width",
    "height": "height",
    "seed": "seed",
    "num_images": "batch_size",
}
IMG2IMG_NAMES = {  # and init_images -> image
    **A1111_NAMES,
    "strength": "denoising_strength",
    "mask_image": "mask",
    "mask_blur": "mask_blur",
}
RANDOM_SEED = -1
CLIP_SKIP_HELP = specs(Request)["clip_skip"].help
MOST_STEPS = int(served_limits(SERVED["steps"]).high)


def _a1111_fields(names: dict[str, str]) -> dict[str, Any]:
    """The derived fields, with A1111's defaults and conventions where they differ."""
    derived = derived_fields(Request, names)
    declared = specs(Request)
    derived["prompt"] = (Prompt, Field("", description=declared["prompt"].help))
    derived["negative_prompt"] = (
        Prompt,
        Field("", description=declared["negative_prompt"].help + "; empty: none"),
    )
    seed_type, _ = derived["seed"]
    derived["seed"] = (
        seed_type | Literal[RANDOM_SEED],
        Field(RANDOM_SEED, description=declared["seed"].help + "; -1: random"),
    )
    all_steps = json_type(replace(declared["steps"], served=None))  # the pipeline's limits
    derived["steps"] = (
        all_steps,
        Field(
            derived["steps"][1].default,
            description=f"{declared['steps'].help}; above {MOST_STEPS}: {MOST_STEPS}",
        ),
    )
    return derived


class OverrideSettings(BaseModel):
    """The settings a request may override; the one lcm-lite has, the others ignored."""

    model_config = ConfigDict(extra="ignore", strict=True)

    CLIP_stop_at_last_layers: (
        Annotated[int, Interval(ge=1), BeforeValidator(whole_number)] | None
    ) = Field(None, description=f"A1111's Clip skip (1: none): {CLIP_SKIP_HELP}")


class A1111Request(BaseModel):
    """A1111's own fields without a ``Request`` field, and the translation to ``Request``s."""

    model_config = ConfigDict(extra="ignore", strict=True)  # types as the schema says

    n_iter: Annotated[int, Interval(ge=1, le=MAX_IMAGES), BeforeValidator(whole_number)] = Field(
        1, description="batches, one after the other: batch_size images each"
    )
    override_settings: OverrideSettings = Field(default_factory=OverrideSettings)

    def requests(
        self,
        pictures: dict[str, bytes | None] | None = None,
        loras: Sequence[tuple[str, float]] = (),
    ) -> tuple[list[Request], list[str]]:
        """One ``Request`` per batch (``n_iter``): the seed of batch ``k`` is ``seed + k *
        batch_size`` (A1111's first seed of that batch); -1 draws one. The prompt's
        ``<lora:NAME:WEIGHT>`` tags are taken out and set the weights of the ``loras`` loaded
        (``lora_weights``); with them, notes on the tags that name none (ignored, as A1111)."""
        values = {name: getattr(self, http) for name, http in self.names().items()}
        seed = random_seed() if values["seed"] in (RANDOM_SEED, None) else values["seed"]
        stop_at = self.override_settings.CLIP_stop_at_last_layers
        prompt, tags = take_lora_tags(values["prompt"])
        lora_weights, unknown = tagged_weights(tags, loras)
        values.update(
            prompt=prompt,
            lora_weights=lora_weights,
            negative_prompt=values["negative_prompt"] or None,
            steps=min(values["steps"], MOST_STEPS),
            **(pictures or {}),
            prompt_weighting=True,  # A1111 always reads its attention syntax
            clip_skip=None if stop_at in (None, 1) else stop_at - 1,
        )
        requests = [
            Request(**{**values, "seed": (seed + batch * self.batch_size) % 2**64})
            for batch in range(self.n_iter)
        ]
        return requests, [
            f"<lora:{name}> ignored: no LoRA of that name is loaded" for name in unknown
        ]

    @classmethod
    def names(cls) -> dict[str, str]:
        return A1111_NAMES


class _A1111Img2Img(A1111Request):
    init_images: Annotated[list[Picture], Field(min_length=1, max_length=1)] = Field(
        description="the starting picture, base64 (or a data: URL); one"
    )
    inpainting_mask_invert: Literal[0, 1] = Field(
        0, description="1 (repaint where the mask is black) is refused: send the mask inverted"
    )
    _pictures: dict[str, bytes | None] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _decode(self) -> _A1111Img2Img:
        mask = getattr(self, "mask", None)  # inpainting; clients send null or "" without one
        if mask and self.inpainting_mask_invert:
            raise ValueError(
                "inpainting_mask_invert: 1 is not supported; send the mask inverted (white: "
                "repaint)"
            )
        self._pictures = {
            "image": decode_picture(self.init_images[0]),
            "mask_image": decode_picture(mask) if mask else None,
        }
        return self

    @classmethod
    def names(cls) -> dict[str, str]:
        return IMG2IMG_NAMES

    def pictures(self) -> dict[str, bytes | None]:
        """The decoded pictures: ``image``, and ``mask_image`` (None: no inpainting)."""
        return self._pictures


Txt2ImgRequest = create_model(
    "Txt2ImgRequest",
    __base__=A1111Request,
    __doc__="``POST /sdapi/v1/txt2img``: A1111's fields; the ones lcm-lite has no use for are "
    "ignored.",
    **_a1111_fields(A1111_NAMES),
)
Img2ImgRequest = create_model(
    "Img2ImgRequest",
    __base__=_A1111Img2Img,
    __doc__="``POST /sdapi/v1/img2img``: those of txt2img, ``init_images`` and "
    "``denoising_strength``; width and height missing: the picture's own size.",
    **_a1111_fields(IMG2IMG_NAMES),
)


class ImagesAnswer(BaseModel):
    """txt2img's and img2img's answer, as A1111's ``TextToImageResponse``."""

    images: list[str] = Field(description="base64 PNGs")
    parameters: dict[str, Any] = Field(description="the request's fields, as understood")
    info: str = Field(description="JSON text: the seeds used, the sizes, steps, ...")


class ProgressState(BaseModel):
    skipped: bool = False
    interrupted: bool
    stopping_generation: bool = False
    job: str
    job_count: int
    job_timestamp: str
    job_no: int
    sampling_step: int
    sampling_steps: int


class ProgressAnswer(BaseModel):
    """``GET /sdapi/v1/progress``, as A1111's ``ProgressResponse``."""

    progress: float = Field(description="of the running job, 0 to 1")
    eta_relative: float = Field(description="seconds left, estimated")
    state: ProgressState
    current_image: str | None = Field(
        None, description="the latest step's preview, base64 PNG (with a tiny VAE loaded)"
    )
    textinfo: str | None = None
