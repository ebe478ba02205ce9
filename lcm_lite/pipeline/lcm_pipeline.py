"""Text to image with a latent consistency model, as diffusers' ``LatentConsistencyModelPipeline``,
and image to image, as its twin ``LatentConsistencyModelImg2ImgPipeline``:

    tokenize -> encode -> latents (noise, or an encoded picture noised to the first timestep)
    -> for t in timesteps: UNet, LCM step -> VAE decode -> images

The decoder is the model's VAE (``vae="full"``) or a tiny one (TAESD, ``vae="tiny"``, see
``tiny_vae``); with a tiny VAE loaded, each step's ``StepInfo.preview()`` decodes its latents.

A plain Stable Diffusion model with an LCM-LoRA runs as diffusers' ``StableDiffusionPipeline`` with
``LCMScheduler``: the same loop, with classifier-free guidance instead of the guidance embedding
(``classifier_free``). LoRA adapters are added to the networks when they compile (``lora``).

Same inputs give the same numbers as diffusers (to float tolerance, with ``precision="f32"``);
with a seed, the same noise as ``torch.Generator().manual_seed(seed)`` (see ``torch_rng``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np
from PIL import Image

from lcm_lite.errors import Cancelled, ModelError, UsageError
from lcm_lite.images.png import to_pil
from lcm_lite.images.preprocess import (
    Picture,
    check_picture_count,
    load_images,
    output_size,
    picture_name,
    preprocess,
    repeat_for_batch,
)
from lcm_lite.models.configs import VAEConfig
from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.hub import VAE_ENCODER_FILES, resolve_model
from lcm_lite.models.lora import Adapter, describe, open_adapters
from lcm_lite.models.networks import TextEncoder, UNet, VAEDecoder, VAEEncoder
from lcm_lite.models.tokenizer import CLIPTokenizer, TokenizedPrompts
from lcm_lite.models.vae import (
    CONVERT_TAESD,
    TinyVAE,
    load_tiny_vae,
    own_tiny_vae,
    resolve_tiny_vae,
)
from lcm_lite.pipeline.results import GenerationResult, Settings, StepCallback, StepInfo
from lcm_lite.request import DEFAULT_SIZE, MAX_SIZE, check_arguments, check_strength
from lcm_lite.runtime.compiler import Compiler
from lcm_lite.sampling import classifier_free
from lcm_lite.sampling.guidance_embedding import guidance_scale_embedding
from lcm_lite.sampling.scheduler import LCMScheduler
from lcm_lite.sampling.torch_rng import TorchGenerator, random_seed

log = logging.getLogger("lcm_lite")


@dataclass
class _Compiled:
    """The networks compiled for one batch size and resolution (static shapes); the UNet's batch
    is doubled under classifier-free guidance."""

    num_prompts: int
    latent_shape: tuple[int, ...]
    guided: bool
    text_encoder: TextEncoder | None = None
    unet: UNet | None = None
    decoders: dict[Path, VAEDecoder] = field(default_factory=dict)
    encoders: dict[Path, VAEEncoder] = field(default_factory=dict)  # by the VAE's folder
    seconds: dict[str, float] = field(default_factory=dict)


class LCMPipeline:
    """Load once, call many times. Calls are serialised: one inference at a time per pipeline.

    ``keep_models=False`` frees the text encoder after encoding and the UNet before decoding,
    which lowers peak memory for a one-shot run but recompiles on the next call (a tiny VAE's
    decoder, a few MB that previews use every step, stays).

    ``tiny_vae``: the TAESD decoder for ``vae="tiny"`` and previews; by default the model's own
    decoder if it is an AutoencoderTiny, else none.
    ``adapters`` are the LoRA adapters (``lora.open_adapters``) added to the networks.
    """

    def __init__(
        self,
        folder: ModelFolder,
        compiler: Compiler,
        *,
        keep_models: bool = True,
        hub_id: str | None = None,
        tiny_vae: TinyVAE | None = None,
        adapters: Sequence[Adapter] = (),
    ) -> None:
        folder.check_lcm(with_unet_lora=any(a.touches("unet") for a in adapters))
        self.folder = folder
        self.hub_id = hub_id  # the hub repository ``folder`` is a snapshot of, if any
        self.compiler = compiler
        self.keep_models = keep_models
        self.tiny_vae = tiny_vae or own_tiny_vae(folder, hub_id)
        self.progress: StageProgress | None = None
        self.adapters = list(adapters)
        self.tokenizer = CLIPTokenizer.from_folder(folder.root / "tokenizer")
        self.scheduler = LCMScheduler(folder.scheduler)
        self._compiled: _Compiled | None = None
        self._encodings: dict[tuple[str, ...], tuple[TokenizedPrompts, np.ndarray]] = {}
        self._lock = threading.Lock()
        self._decode_lock = threading.Lock()  # previews may decode from another thread

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
        tiny_vae: str | Path | None = None,
        loras: Sequence[tuple[str | Path, float]] | None = None,
    ) -> LCMPipeline:
        """Open an OpenVINO LCM: a local folder, or a hub id such as
        ``OpenVINO/LCM_Dreamshaper_v7-int8-ov`` (downloaded once; see ``hub``). ``precision`` is
        OpenVINO's inference precision hint (``"f32"`` for exact parity with diffusers; ``None``
        is the device default: bf16 on CPUs with AVX-512 BF16 or AMX, else f32); ``cache_dir``
        keeps compiled models between processes. ``tiny_vae``: a tiny-VAE folder or hub id
        (``rupeshs/taesd-ov``; see ``tiny_vae``) for ``vae="tiny"`` and previews. ``loras``:
        ``[(file or hub id, weight), ...]`` LoRA adapters, blended as diffusers'
        ``set_adapters``; with an LCM-LoRA, a plain Stable Diffusion 1.5 folder."""
        root = resolve_model(model, revision)
        folder = ModelFolder.open(root)
        return cls(
            folder,
            Compiler(device, precision, cache_dir),
            keep_models=keep_models,
            hub_id=None if root == Path(model).expanduser() else str(model),
            tiny_vae=None if tiny_vae is None else load_tiny_vae(tiny_vae, folder),
            adapters=open_adapters(loras, folder.unet_config),
        )

    @property
    def has_previews(self) -> bool:
        """Whether ``StepInfo.preview()`` works, that is whether a tiny VAE is loaded."""
        return self.tiny_vae is not None

    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        negative_prompt: str | Sequence[str] | None = None,
        image: Picture | Sequence[Picture] | None = None,
        strength: float = 0.8,
        steps: int = 4,
        guidance_scale: float = 8.0,
        width: int | None = None,
        height: int | None = None,
        num_images: int = 1,
        seed: int | None = None,
        latents: np.ndarray | None = None,
        original_inference_steps: int | None = None,
        timesteps: Sequence[int] | None = None,
        vae: str = "full",
        callback: StepCallback | None = None,
    ) -> GenerationResult:
        """Generate ``num_images`` images per prompt (512x512 unless told). ``guidance_scale``
        follows diffusers: the UNet is conditioned on ``w = guidance_scale - 1`` (the LCM paper's
        own code embeds the scale unchanged, so its 8 is diffusers' 9); a Stable Diffusion UNet
        with LCM-LoRA is guided by ``negative_prompt`` when it is above 1. ``vae="tiny"``
        decodes with the tiny VAE: faster, and close to but not the full VAE's image; with
        ``image`` it encodes the picture too, as diffusers' img2img pipeline with that ``vae``.

        With ``image`` (a picture, or a list: see ``pictures.load_image``), image to image: the
        picture, resized to ``width x height`` (default: its own size rounded down to a multiple
        of 8), is encoded and noised to the ``strength`` point of the schedule, and ``steps`` are
        taken from the last ``int(original_inference_steps * strength)`` distillation timesteps:
        at 1.0 the start is nearly pure noise, the smaller the closer to the picture."""
        prompts = [prompt] if isinstance(prompt, str) else prompt
        if not isinstance(prompts, (list, tuple)):
            raise UsageError(f"prompt must be a string or a list of strings, got {prompt!r:.40}")
        pictures = None
        if image is not None:
            check_strength(strength)
            pictures = load_images(image)
            width, height = output_size(
                pictures[0], width, height, self.folder.vae_scale_factor, MAX_SIZE
            )
        width = DEFAULT_SIZE if width is None else width
        height = DEFAULT_SIZE if height is None else height
        check_arguments(list(prompts), steps, guidance_scale, width, height, num_images)
        self._check_vae(vae)
        negatives = self._negative_prompts(negative_prompt, len(prompts), guidance_scale)
        if negatives:
            check_arguments(negatives, steps, guidance_scale, width, height, num_images)
        steps, width, height, num_images = int(steps), int(width), int(height), int(num_images)
        schedule = self.scheduler.timesteps(
            None if timesteps is not None else steps,
            original_inference_steps=original_inference_steps,
            timesteps=timesteps,
            strength=1.0 if pictures is None else strength,
        )
        original_inference_steps = (
            original_inference_steps or self.scheduler.config.original_inference_steps
        )
        settings = Settings(
            list(prompts),
            len(schedule),
            float(guidance_scale),
            width,
            height,
            num_images,
            tuple(int(t) for t in schedule),
            int(original_inference_steps),
            image=None if pictures is None else picture_name(image),
            strength=None if pictures is None else float(strength),
            vae=vae,
            custom_timesteps=None if timesteps is None else tuple(int(t) for t in timesteps),
            negative_prompts=negatives,
            loras=describe(self.adapters),
            tiny_vae=self._tiny_vae_source(vae),
        )
        generator = TorchGenerator(random_seed() if seed is None else seed)
        latent_shape = (
            len(settings.prompts) * num_images,
            self.folder.latent_channels,
            height // self.folder.vae_scale_factor,
            width // self.folder.vae_scale_factor,
        )
        if latents is not None and latents.shape != latent_shape:
            raise UsageError(f"latents must have shape {latent_shape}, got {latents.shape}")
        pixels = None
        if pictures is not None and latents is None:
            check_picture_count(len(pictures), latent_shape[0])
            pixels = preprocess(pictures, width, height)
            self._fetch_vae_encoder(vae)
        with self._lock:
            return self._generate(
                settings, schedule, latent_shape, generator, latents, pixels, callback
            )

    @property
    def takes_negative_prompts(self) -> bool:
        """Whether ``negative_prompt`` is accepted: by a plain Stable Diffusion UNet (with
        LCM-LoRA), not by a latent consistency model, whose guidance is distilled into the UNet
        (its ``time_cond_proj_dim``), as diffusers' LCM pipeline has no negative prompt."""
        return self.folder.time_cond_proj_dim is None

    def check_negative_prompt(self, negative_prompt: str | Sequence[str] | None) -> None:
        """Raise UsageError when ``negative_prompt`` is given to a model that takes none."""
        if negative_prompt is not None and not self.takes_negative_prompts:
            raise UsageError(
                "a latent consistency model takes no negative prompt: its guidance is "
                "distilled into the UNet (negative prompts work with LCM-LoRA models)"
            )

    def _negative_prompts(
        self, negative_prompt: str | Sequence[str] | None, num_prompts: int, guidance_scale: float
    ) -> list[str] | None:
        """The negative prompts classifier-free guidance uses; None when it is off."""
        self.check_negative_prompt(negative_prompt)
        if not self.takes_negative_prompts:
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
        pixels: np.ndarray | None,
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

        if latents is None and pixels is None:  # text to image: pure noise
            latents = generator.randn(latent_shape)
        elif latents is None:  # image to image: the encoded pictures, noised
            latents = self._picture_latents(
                compiled, settings.vae, pixels, int(schedule[0]), generator, timings
            )
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        guidance_embedding = None
        if self.folder.time_cond_proj_dim is not None:
            guidance_embedding = guidance_scale_embedding(
                settings.guidance_scale, latent_shape[0], self.folder.time_cond_proj_dim
            )

        unet = self._network(compiled, "unet")
        preview = None if self.tiny_vae is None else partial(self._decode, compiled, "tiny")
        denoised = latents
        self._report("steps", 0, len(schedule))
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
            self._report("steps", i + 1, len(schedule))
            info = StepInfo(i + 1, len(schedule), int(t), latents, denoised, preview)
            if callback is not None and callback(info) is False:
                raise Cancelled(f"cancelled by the step callback after step {i + 1}")
        del unet  # without keep_models, this frees the UNet before the VAE decoder is compiled

        images = self._decode(compiled, settings.vae, denoised, timings)
        timings.update({f"compile_{k}": v for k, v in compiled.seconds.items()})
        compiled.seconds.clear()
        return GenerationResult(images, generator.seed, timings, tokens.dropped_tokens, settings)

    def _picture_latents(
        self,
        compiled: _Compiled,
        vae: str,
        pixels: np.ndarray,
        first_timestep: int,
        generator: TorchGenerator,
        timings: dict[str, float],
    ) -> np.ndarray:
        """diffusers' img2img ``prepare_latents``: the pictures' latents by the ``vae`` in use's
        encoder (a draw for the posterior sample of an AutoencoderKL, none for an AutoencoderTiny),
        tiled over the batch, noised to the first timestep (a second draw)."""
        vae_encoder = self._vae_encoder(compiled, vae)
        clock = time.perf_counter()
        picture_latents = vae_encoder(pixels, generator)
        timings["vae_encoder"] = _lap(clock)
        batch_latents = repeat_for_batch(picture_latents, compiled.latent_shape[0])
        noise = generator.randn(batch_latents.shape)
        return self.scheduler.add_noise(batch_latents, noise, first_timestep)

    def _fetch_vae_encoder(self, vae: str) -> None:
        """Image to image encodes with the ``vae`` in use, as diffusers' img2img pipeline with
        its ``vae``: "full" the model's encoder, "tiny" the tiny VAE's. Text to image reads
        neither, so a hub snapshot's is downloaded on the first call with a picture."""
        if vae == "full":
            root, hub_id, fetch = self.folder.root, self.hub_id, resolve_model
            needs = (
                f"{hub_id or root} has no VAE encoder (vae_encoder/), which image to image needs"
            )
            convert = "convert the model with `lcm-lite-convert SOURCE OUT_DIR --with-vae-encoder`"
        else:
            root, hub_id, fetch = self.tiny_vae.root, self.tiny_vae.hub_id, resolve_tiny_vae
            needs = (
                f"the tiny VAE {hub_id or root} has no encoder (vae_encoder/), which image to "
                'image with vae="tiny" (--vae tiny) needs'
            )
            convert = f'{CONVERT_TAESD}, which writes both halves, or use vae="full" (--vae full)'
        xml = root / "vae_encoder" / "openvino_model.xml"
        if not xml.is_file() and hub_id is not None:  # the snapshot's commit: it matches the rest
            fetch(hub_id, root.name, files=VAE_ENCODER_FILES)
        if xml.is_file():
            return
        if hub_id is None:
            raise ModelError(f"{needs}: {convert}")
        raise ModelError(
            f"{needs}, in the local Hugging Face cache and none could be downloaded: on a "
            f"connected machine run `hf download {hub_id} --include 'vae_encoder/*'`, or {convert}"
        )

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
        compiled = self._compiled
        if compiled is None or (compiled.num_prompts, compiled.latent_shape, compiled.guided) != (
            num_prompts,
            latent_shape,
            guided,
        ):
            self._compiled = _Compiled(num_prompts, latent_shape, guided)
        return self._compiled

    def _tiny_vae_source(self, vae: str) -> str | None:
        """What metadata records of the decoder: the tiny VAE's folder, when it made the image
        and is not the model's own decoder."""
        if vae != "tiny" or self.tiny_vae.root == self.folder.root:
            return None
        return str(self.tiny_vae.root)

    def _check_vae(self, vae: str) -> None:
        if vae not in ("full", "tiny"):
            raise UsageError(f'vae must be "full" or "tiny", got {vae!r}')
        if vae == "tiny" and self.tiny_vae is None:
            raise UsageError(
                'vae="tiny" needs a tiny VAE: LCMPipeline.from_pretrained(..., tiny_vae=FOLDER or '
                "HUB_ID) (command line: --tiny-vae, default rupeshs/taesd-ov)"
            )

    def _decode(
        self,
        compiled: _Compiled,
        vae: str,
        denoised: np.ndarray,
        timings: dict[str, float] | None = None,
    ) -> list[Image.Image]:
        """``denoised`` latents to images with the ``vae`` decoder: "full" is the model's,
        "tiny" the tiny VAE's; each takes ``latents / scaling_factor + shift_factor`` from its
        own config. Serialised, since a preview may run in another thread; a tiny decoder stays
        compiled even without ``keep_models``."""
        if vae == "full":
            xml, config, name = self.folder.xml("vae_decoder"), self.folder.vae, "vae_decoder"
        else:
            xml, config, name = self.tiny_vae.xml, self.tiny_vae.config, "tiny_vae_decoder"
        with self._decode_lock:
            decoder = compiled.decoders.get(xml)
            if decoder is None:
                decoder = self._compile(
                    compiled,
                    name,
                    lambda: VAEDecoder(self.compiler, xml, compiled.latent_shape, _LABELS[name]),
                )
                if self.keep_models or config.is_tiny:
                    compiled.decoders[xml] = decoder
            if timings is None:
                return to_pil(decoder(config.decoder_input(denoised)))
            self._report("decode", 0, 1)
            clock = time.perf_counter()
            images = to_pil(decoder(config.decoder_input(denoised)))
            timings["vae_decoder"] = _lap(clock)
            self._report("decode", 1, 1)
            return images

    def _vae_encoder(self, compiled: _Compiled, vae: str) -> VAEEncoder:
        """The ``vae`` in use's encoder ("full": the model's, "tiny": the tiny VAE's, each with its
        own ``config.json``), compiled for ``compiled``'s size now if it is not held; held for the
        next call only with ``keep_models``."""
        root = self.folder.root if vae == "full" else self.tiny_vae.root
        encoder = compiled.encoders.get(root)
        if encoder is not None:
            return encoder
        name = "vae_encoder" if root == self.folder.root else "tiny_vae_encoder"
        xml, config = (
            root / "vae_encoder" / "openvino_model.xml",
            root / "vae_encoder" / "config.json",
        )
        encoder = self._compile(
            compiled,
            name,
            lambda: VAEEncoder(
                self.compiler, xml, VAEConfig.read(config), compiled.latent_shape, _LABELS[name]
            ),
        )
        if self.keep_models:
            compiled.encoders[root] = encoder
        return encoder

    def _network(self, compiled: _Compiled, name: str) -> TextEncoder | UNet:
        """``compiled``'s text encoder or UNet, compiled for its shapes now if it is not held;
        held for the next call only with ``keep_models``."""
        network = getattr(compiled, name)
        if network is not None:
            return network
        text_length = self.tokenizer.model_max_length
        if name == "text_encoder":
            network = self._compile(
                compiled,
                name,
                lambda: TextEncoder(
                    self.compiler, self.folder, compiled.num_prompts, text_length, self.adapters
                ),
            )
        else:
            batch, *latent_size = compiled.latent_shape  # the batch doubles under guidance
            unet_shape = (batch * (2 if compiled.guided else 1), *latent_size)
            network = self._compile(
                compiled,
                name,
                lambda: UNet(self.compiler, self.folder, unet_shape, text_length, self.adapters),
            )
        if self.keep_models:
            setattr(compiled, name, network)
        return network

    def _compile(self, compiled: _Compiled, name: str, build: Callable[[], _Network]) -> _Network:
        """``build()`` a network, reported as the stage "compile <label>" and timed."""
        stage = f"compile {_LABELS[name]}"
        if self.progress is None:  # else the progress shows it
            size = "x".join(map(str, compiled.latent_shape))
            log.info("compiling the %s for %s", _LABELS[name], size)
        self._report(stage, 0, 1)
        clock = time.perf_counter()
        network = build()
        compiled.seconds[name] = _lap(clock)
        self._report(stage, 1, 1)
        return network

    def _report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)


class StageProgress(Protocol):
    """Told where a call is: ``(stage, 0, total)`` when a stage starts, ``(stage, done, total)``
    as it advances. Stages: "compile <network>", "steps", "decode". The CLI's progress bars."""

    def __call__(self, stage: str, done: int, total: int) -> None: ...


_Network = TypeVar("_Network", TextEncoder, UNet, VAEDecoder, VAEEncoder)
_LABELS = {
    "text_encoder": "text encoder",
    "unet": "UNet",
    "vae_decoder": "VAE decoder",
    "vae_encoder": "VAE encoder",
    "tiny_vae_encoder": "tiny VAE encoder",
    "tiny_vae_decoder": "tiny VAE decoder",
}


def _lap(start: float) -> float:
    return time.perf_counter() - start
