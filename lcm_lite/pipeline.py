"""Text to image with a latent consistency model, as diffusers' ``LatentConsistencyModelPipeline``:

    tokenize -> encode -> latents -> for t in timesteps: UNet, LCM step -> VAE decode -> images

A plain Stable Diffusion model with an LCM-LoRA runs as diffusers' ``StableDiffusionPipeline`` with
``LCMScheduler``: the same loop, with classifier-free guidance instead of the guidance embedding
(``classifier_free``). LoRA adapters are added to the networks when they compile (``lora``).

Same inputs give the same numbers as diffusers (to float tolerance, with ``precision="f32"``);
with a seed, the same noise as ``torch.Generator().manual_seed(seed)`` (see ``torch_rng``).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from . import classifier_free
from .compiler import Compiler
from .errors import Cancelled, UsageError
from .folder import ModelFolder
from .guidance import guidance_scale_embedding
from .hub import resolve_model
from .images import to_pil
from .lora import Adapter, describe, open_adapters
from .networks import TextEncoder, UNet, VAEDecoder
from .scheduler import LCMScheduler, LCMSchedulerConfig
from .tokenizer import CLIPTokenizer, TokenizedPrompts
from .torch_rng import TorchGenerator, random_seed

log = logging.getLogger("lcm_lite")

DEFAULT_SIZE = 512
MAX_SIZE = 2048
MAX_IMAGES = 16


@dataclass(frozen=True)
class StepInfo:
    """What a step callback sees after each LCM step; return ``False`` from it to cancel."""

    step: int
    num_steps: int
    timestep: int
    latents: np.ndarray
    denoised: np.ndarray


StepCallback = Callable[[StepInfo], "bool | None"]


@dataclass(frozen=True)
class Settings:
    """What one call asked for: with the seed, everything needed to make its images again."""

    prompts: list[str]
    steps: int
    guidance_scale: float
    width: int
    height: int
    num_images: int
    negative_prompts: list[str] | None = None
    loras: str = ""


class GenerationResult(list[Image.Image]):
    """The images of one call, in diffusers' batch order (each prompt's images together), with
    the seed that makes them again, the settings, and where the time went (seconds)."""

    def __init__(
        self,
        images: list[Image.Image],
        seed: int,
        timings: dict[str, float],
        dropped_tokens: list[int],
        settings: Settings,
    ) -> None:
        super().__init__(images)
        self.seed = seed
        self.timings = timings
        self.dropped_tokens = dropped_tokens
        self.settings = settings

    @property
    def images(self) -> list[Image.Image]:
        return list(self)

    def metadata(self, index: int, model: str) -> dict[str, object]:
        """How image ``index`` was made, as lcm-lite stores it in PNG text chunks."""
        prompt_index = index // self.settings.num_images
        return {
            "prompt": self.settings.prompts[prompt_index],
            "seed": self.seed,
            "steps": self.settings.steps,
            "guidance": self.settings.guidance_scale,
            "width": self.settings.width,
            "height": self.settings.height,
            "num_images": self.settings.num_images,
            "index": index % self.settings.num_images,
            "model": model,
            **(
                {"negative_prompt": self.settings.negative_prompts[prompt_index]}
                if self.settings.negative_prompts
                else {}
            ),
            **({"loras": self.settings.loras} if self.settings.loras else {}),
        }


@dataclass
class _Compiled:
    """The networks compiled for one batch size and resolution (static shapes); the UNet's batch
    is doubled under classifier-free guidance."""

    key: tuple[int, bool, int, int, int, int]
    text_encoder: TextEncoder | None = None
    unet: UNet | None = None
    vae_decoder: VAEDecoder | None = None
    seconds: dict[str, float] = field(default_factory=dict)


class LCMPipeline:
    """Load once, call many times. Calls are serialised: one inference at a time per pipeline.

    ``keep_models=False`` frees the text encoder after encoding and the UNet before decoding,
    which lowers peak memory for a one-shot run but recompiles on the next call.
    ``adapters`` are the LoRA adapters (``lora.open_adapters``) added to the networks.
    """

    def __init__(
        self,
        folder: ModelFolder,
        compiler: Compiler,
        *,
        keep_models: bool = True,
        adapters: Sequence[Adapter] = (),
    ) -> None:
        folder.check_lcm(with_unet_lora=any(a.touches("unet") for a in adapters))
        self.folder = folder
        self.compiler = compiler
        self.keep_models = keep_models
        self.adapters = list(adapters)
        self.tokenizer = CLIPTokenizer.from_folder(folder.root / "tokenizer")
        self.scheduler = LCMScheduler(
            LCMSchedulerConfig.from_file(folder.root / "scheduler" / "scheduler_config.json")
        )
        self._compiled: _Compiled | None = None
        self._encodings: dict[tuple[str, ...], tuple[TokenizedPrompts, np.ndarray]] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        revision: str | None = None,
        device: str = "CPU",
        precision: str | None = None,
        cache_dir: Path | None = None,
        keep_models: bool = True,
        loras: Sequence[tuple[str | Path, float]] | None = None,
    ) -> LCMPipeline:
        """Open an OpenVINO LCM: a local folder, or a hub id such as
        ``OpenVINO/LCM_Dreamshaper_v7-int8-ov`` (downloaded once; see ``hub``). ``precision`` is
        OpenVINO's inference precision hint (``"f32"`` for exact parity with diffusers; ``None``
        is the device default, bf16 on AMX CPUs); ``cache_dir`` keeps compiled models between
        processes. ``loras``: ``[(file or hub id, weight), ...]`` LoRA adapters, blended as
        diffusers' ``set_adapters``; with an LCM-LoRA, a plain Stable Diffusion 1.5 folder."""
        folder = ModelFolder.open(resolve_model(str(model), revision))
        return cls(
            folder,
            Compiler(device, precision, cache_dir),
            keep_models=keep_models,
            adapters=open_adapters(loras, folder.unet_config),
        )

    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        negative_prompt: str | Sequence[str] | None = None,
        steps: int = 4,
        guidance_scale: float = 8.0,
        width: int = DEFAULT_SIZE,
        height: int = DEFAULT_SIZE,
        num_images: int = 1,
        seed: int | None = None,
        latents: np.ndarray | None = None,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        callback: StepCallback | None = None,
    ) -> GenerationResult:
        """Generate ``num_images`` images per prompt (512x512 unless told). ``guidance_scale``
        follows diffusers: an LCM's UNet is conditioned on ``w = guidance_scale - 1`` (the LCM
        paper's own code embeds the scale unchanged, so its 8 is diffusers' 9); a Stable
        Diffusion UNet with LCM-LoRA is guided by ``negative_prompt`` when it is above 1."""
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)):
            raise UsageError(f"prompt must be a string or a list of strings, got {prompt!r:.40}")
        negatives = self._negative_prompts(negative_prompt, len(prompts), guidance_scale)
        settings = Settings(
            list(prompts),
            steps,
            guidance_scale,
            width,
            height,
            num_images,
            negatives,
            describe(self.adapters),
        )
        check_arguments(settings.prompts, steps, guidance_scale, width, height, num_images)
        if negatives:
            check_arguments(negatives, steps, guidance_scale, width, height, num_images)
        generator = TorchGenerator(random_seed() if seed is None else seed)
        latent_shape = (
            len(settings.prompts) * num_images,
            self.folder.latent_channels,
            height // self.folder.vae_scale_factor,
            width // self.folder.vae_scale_factor,
        )
        if latents is not None and latents.shape != latent_shape:
            raise UsageError(f"latents must have shape {latent_shape}, got {latents.shape}")
        schedule = self.scheduler.timesteps(
            None if timesteps is not None else steps,
            original_inference_steps=original_inference_steps,
            timesteps=timesteps,
        )
        with self._lock:
            return self._generate(settings, schedule, latent_shape, generator, latents, callback)

    def _negative_prompts(
        self, negative_prompt: str | Sequence[str] | None, num_prompts: int, guidance_scale: float
    ) -> list[str] | None:
        """The negative prompts classifier-free guidance uses; None when it is off."""
        if self.folder.time_cond_proj_dim is not None:
            if negative_prompt is not None:
                raise UsageError(
                    "a latent consistency model takes no negative prompt: its guidance is "
                    "distilled into the UNet (negative prompts work with LCM-LoRA models)"
                )
            return None
        if not classifier_free.is_guided(guidance_scale, has_guidance_embedding=False):
            if negative_prompt is not None:
                log.warning("the negative prompt is not used at guidance_scale <= 1 (as diffusers)")
            return None
        return classifier_free.negative_prompts(negative_prompt, num_prompts)

    def _generate(
        self,
        settings: Settings,
        schedule: np.ndarray,
        latent_shape: tuple[int, ...],
        generator: TorchGenerator,
        latents: np.ndarray | None,
        callback: StepCallback | None,
    ) -> GenerationResult:
        timings: dict[str, float] = {}
        guided = settings.negative_prompts is not None
        compiled = self._networks_for(len(settings.prompts), guided, latent_shape)
        tokens, text_embeddings = self._encode_prompts(settings.prompts, compiled, timings)
        for text, dropped in zip(settings.prompts, tokens.dropped_tokens, strict=True):
            if dropped:
                log.warning("prompt too long for CLIP: %d tokens dropped from %.40r", dropped, text)
        if guided:  # diffusers' batch order: [negative prompts; prompts]
            _, negative_embeddings = self._encode_prompts(
                settings.negative_prompts, compiled, timings
            )
            text_embeddings = np.concatenate([negative_embeddings, text_embeddings])
        prompt_embeds = np.repeat(text_embeddings, settings.num_images, axis=0)

        if latents is None:
            latents = generator.randn(latent_shape)
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        guidance_embedding = None
        if self.folder.time_cond_proj_dim is not None:
            guidance_embedding = guidance_scale_embedding(
                settings.guidance_scale, latent_shape[0], self.folder.time_cond_proj_dim
            )

        unet = self._network(compiled, "unet")
        denoised = latents
        for i, t in enumerate(schedule):
            clock = time.perf_counter()
            if guided:
                model_output = classifier_free.guided_noise(
                    unet(np.concatenate([latents, latents]), int(t), prompt_embeds, None),
                    settings.guidance_scale,
                )
            else:
                model_output = unet(latents, int(t), prompt_embeds, guidance_embedding)
            last = i == len(schedule) - 1
            noise = None if last else generator.randn(latent_shape)
            latents, denoised = self.scheduler.step(
                model_output, int(t), None if last else int(schedule[i + 1]), latents, noise
            )
            timings[f"unet_step_{i + 1}"] = _lap(clock)
            if (
                callback is not None
                and callback(StepInfo(i + 1, len(schedule), int(t), latents, denoised)) is False
            ):
                raise Cancelled(f"cancelled by the step callback after step {i + 1}")
        del unet  # without keep_models, this frees the UNet before the VAE decoder is compiled

        vae_decoder = self._network(compiled, "vae_decoder")
        clock = time.perf_counter()
        images = to_pil(vae_decoder(denoised / self.folder.scaling_factor))
        timings["vae_decoder"] = _lap(clock)
        timings.update({f"compile_{k}": v for k, v in compiled.seconds.items()})
        compiled.seconds.clear()
        return GenerationResult(images, generator.seed, timings, tokens.dropped_tokens, settings)

    def _encode_prompts(
        self, prompts: list[str], compiled: _Compiled, timings: dict[str, float]
    ) -> tuple[TokenizedPrompts, np.ndarray]:
        """Tokenize and run the text encoder; the same prompts (and negative prompts) as last call
        reuse that encoding (exploring seeds of one prompt costs no text encoding)."""
        key = tuple(prompts)
        if key in self._encodings:
            timings.setdefault("tokenize", 0.0)
            timings.setdefault("text_encoder", 0.0)
            return self._encodings[key]
        if len(self._encodings) >= 2:  # the prompts and the negative prompts of the last call
            self._encodings.pop(next(iter(self._encodings)))
        clock = time.perf_counter()
        tokens = self.tokenizer(prompts)
        timings["tokenize"] = timings.get("tokenize", 0.0) + _lap(clock)
        text_encoder = self._network(compiled, "text_encoder")
        clock = time.perf_counter()
        text_embeddings = text_encoder(tokens.input_ids)
        timings["text_encoder"] = timings.get("text_encoder", 0.0) + _lap(clock)
        self._encodings[key] = (tokens, text_embeddings)
        return tokens, text_embeddings

    def _networks_for(
        self, num_prompts: int, guided: bool, latent_shape: tuple[int, ...]
    ) -> _Compiled:
        """The networks for this batch and size: compiled on first use, compiled again (with new
        static shapes) only when the size, the batch or classifier-free guidance changes."""
        key = (num_prompts, guided, *latent_shape)
        if self._compiled is None or self._compiled.key != key:
            self._compiled = _Compiled(key)
        return self._compiled

    def _network(self, compiled: _Compiled, name: str) -> TextEncoder | UNet | VAEDecoder:
        """``compiled``'s network ``name``, compiled for its shapes now if it is not held; held
        for the next call only with ``keep_models``."""
        network = getattr(compiled, name)
        if network is not None:
            return network
        num_prompts, guided, latent_shape = compiled.key[0], compiled.key[1], compiled.key[2:]
        log.info("compiling the %s for %s", _LABELS[name], "x".join(map(str, latent_shape)))
        clock = time.perf_counter()
        text_length = self.tokenizer.model_max_length
        if name == "text_encoder":
            network = TextEncoder(
                self.compiler, self.folder, num_prompts, text_length, self.adapters
            )
        elif name == "unet":
            unet_shape = (latent_shape[0] * (2 if guided else 1), *latent_shape[1:])
            network = UNet(self.compiler, self.folder, unet_shape, text_length, self.adapters)
        else:
            network = VAEDecoder(self.compiler, self.folder, latent_shape)
        compiled.seconds[name] = _lap(clock)
        if self.keep_models:
            setattr(compiled, name, network)
        return network


_LABELS = {"text_encoder": "text encoder", "unet": "UNet", "vae_decoder": "VAE decoder"}


def _lap(start: float) -> float:
    return time.perf_counter() - start


def check_arguments(
    prompts: list[str], steps: int, guidance_scale: float, width: int, height: int, num_images: int
) -> None:
    """Reject what diffusers would reject (or silently mis-handle) with one clear sentence."""
    if not prompts:
        raise UsageError("give at least one prompt")
    for prompt in prompts:
        if not isinstance(prompt, str):
            raise UsageError(f"prompts must be strings, got {type(prompt).__name__}")
        if "\x00" in prompt:
            raise UsageError("a prompt contains a NUL character")
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: undecodable bytes from a command line
            raise UsageError("a prompt is not valid UTF-8 text") from None
    for name, value, low, high in (
        ("width", width, 8, MAX_SIZE),
        ("height", height, 8, MAX_SIZE),
        ("num_images", num_images, 1, MAX_IMAGES),
        ("steps", steps, 1, None),
    ):
        if not isinstance(value, int) or isinstance(value, bool):
            raise UsageError(f"{name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            raise UsageError(
                f"{name} must be from {low} to {high or 'the schedule length'}, got {value}"
            )
    for name, value in (("width", width), ("height", height)):
        if value % 8:
            raise UsageError(f"{name} must be a multiple of 8, got {value}")
    if (
        not isinstance(guidance_scale, (int, float))
        or isinstance(guidance_scale, bool)
        or not math.isfinite(guidance_scale)
        or guidance_scale < 0
    ):
        raise UsageError(f"guidance_scale must be a finite number >= 0, got {guidance_scale!r}")
