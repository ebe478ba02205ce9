"""Text to image with a latent consistency model, as diffusers' ``LatentConsistencyModelPipeline``,
and image to image, as its twin ``LatentConsistencyModelImg2ImgPipeline``:

    tokenize -> encode -> latents (noise, or an encoded picture noised to the first timestep)
    -> for t in timesteps: UNet, LCM step -> VAE decode -> images

The decoder is the model's VAE (``vae="full"``) or a tiny one (TAESD, ``vae="tiny"``, see
``models.vae``); with a tiny VAE loaded, each step's ``StepInfo.preview()`` decodes its latents.

Inpainting (a mask, or outpainting) is diffusers' ``StableDiffusionInpaintPipeline`` with
``LCMScheduler``: the starting latents and the mask from ``pipeline.inpainting``; a 4-channel
UNet's steps end with the area to keep put back, a 9-channel UNet takes the mask and the masked
picture's latents with the latents.

A plain Stable Diffusion model with an LCM-LoRA runs as diffusers' ``StableDiffusionPipeline`` with
``LCMScheduler``: the same loop, with classifier-free guidance instead of the guidance embedding
(``sampling.classifier_free``). LoRA adapters are added to the networks when they compile.

With ControlNets, the loop's UNet is ``unet(+controlnet)`` as diffusers'
``StableDiffusionControlNetPipeline`` runs them (``pipeline.control``); inpainting, as its
``StableDiffusionControlNetInpaintPipeline``: the ControlNets take the latents alone.

Same inputs give the same numbers as diffusers (to float tolerance, with ``precision="f32"``);
with a seed, the same noise as ``torch.Generator().manual_seed(seed)`` (``sampling.torch_rng``).
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from lcm_lite.errors import Cancelled, UsageError
from lcm_lite.fields import Devices, picture_digests, picture_name
from lcm_lite.images.postprocess import to_pil
from lcm_lite.images.preprocess import preprocess, repeat_for_batch
from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.hub import DEFAULT_MODEL, resolve_model
from lcm_lite.models.lora import Adapter, open_adapters
from lcm_lite.models.tokenizer import CLIPTokenizer
from lcm_lite.models.vae import Vae, load_tiny_vae, own_tiny_vae
from lcm_lite.pipeline.compiled import CompiledNetworks, Shapes, StageProgress
from lcm_lite.pipeline.control import (
    Control,
    ControlNetChoice,
    check_control_count,
    conditioning_scales,
    open_controlnets,
)
from lcm_lite.pipeline.inpainting import Inpainting, prepare_inpainting
from lcm_lite.pipeline.lora_blend import LoraBlend
from lcm_lite.pipeline.plan import (
    Plan,
    check_negative_prompt,
    check_prompt_options,
    plan,
    takes_negative_prompts,
)
from lcm_lite.pipeline.prompts import PromptEncoder, TokenizedText
from lcm_lite.pipeline.results import GenerationResult, Settings, StepCallback, StepInfo
from lcm_lite.request import MAX_SIZE, LoadOptions, Request
from lcm_lite.runtime.compiler import Compiler, StageCompilers
from lcm_lite.sampling import classifier_free
from lcm_lite.sampling.guidance_embedding import guidance_scale_embedding
from lcm_lite.sampling.scheduler import LCMScheduler
from lcm_lite.sampling.torch_rng import TorchGenerator


class LCMPipeline:
    """Load once, call many times. Calls are serialised: one inference at a time per pipeline.

    ``keep_models=False`` frees the text encoder after encoding and the UNet before decoding,
    which lowers peak memory for a one-shot run but recompiles on the next call (a tiny VAE's
    decoder, a few MB that previews use every step, stays).

    ``tiny_vae``: the TAESD decoder for ``vae="tiny"`` and previews; by default the model's own
    decoder if it is an AutoencoderTiny, else none.
    ``adapters`` are the LoRA adapters (``models.lora.open_adapters``) added to the networks,
    their weights compiled in or an input as ``lora_mode`` says (``pipeline.lora_blend``).
    ``compiler``: each stage's (``runtime.compiler.StageCompilers``), or one ``Compiler`` for all.
    ``controlnets``: the ControlNets (``pipeline.control.open_controlnets``) calls steer with.
    ``networks_class``: what compiles the networks of one shape (a subclass may watch them, as
    ``lcm-lite quantize`` records the UNet's inputs).
    """

    networks_class: Callable[..., CompiledNetworks] = CompiledNetworks

    def __init__(
        self,
        folder: ModelFolder,
        compiler: StageCompilers | Compiler,
        *,
        keep_models: bool = True,
        hub_id: str | None = None,
        tiny_vae: Vae | None = None,
        adapters: Sequence[Adapter] = (),
        lora_mode: str = "auto",
        controlnets: Sequence[ControlNetChoice] = (),
    ) -> None:
        folder.check_lcm(with_unet_lora=any(a.touches("unet") for a in adapters))
        self.folder = folder
        self.compiler = (
            compiler if isinstance(compiler, StageCompilers) else StageCompilers.sharing(compiler)
        )
        self.keep_models = keep_models
        self.vae = Vae.of_model(folder, hub_id)
        self.tiny_vae = tiny_vae or own_tiny_vae(folder, hub_id)
        self.adapters = list(adapters)
        self.lora_blend = LoraBlend(adapters, lora_mode)
        self.controlnets = list(controlnets)
        self.tokenizer = CLIPTokenizer.from_folder(folder.root / "tokenizer")
        self.scheduler = LCMScheduler(folder.scheduler)
        self.prompt_encoder = PromptEncoder(self.tokenizer)
        self._networks: CompiledNetworks | None = None
        self._lock = threading.Lock()
        self._decode_lock = threading.Lock()  # previews may decode from another thread

    @classmethod
    def from_pretrained(
        cls,
        model: str | Path,
        *,
        revision: str | None = None,
        device: str | Mapping[str, str] | Devices = "CPU",
        precision: str | None = None,
        cache_dir: Path | None = None,
        keep_models: bool = True,
        tiny_vae: str | Path | None = None,
        loras: Sequence[tuple[str | Path, float]] | None = None,
        lora_mode: str = "auto",
        controlnet: str | Path | Sequence[str | Path | tuple[str | Path, float]] | None = None,
    ) -> LCMPipeline:
        """Open an OpenVINO LCM: a local folder, or a hub id such as
        ``OpenVINO/LCM_Dreamshaper_v7-int8-ov`` (downloaded once; see ``models.hub``).
        ``precision`` is OpenVINO's inference precision hint (``"f32"`` for exact parity with
        diffusers; ``None`` is the device default: bf16 on CPUs with AVX-512 BF16 or AMX, else
        f32), given to every device; ``device``: one OpenVINO device for every network, or one
        per stage, ``{"unet": "GPU", ...}`` or ``"unet=GPU,..."`` (``fields.Devices``: stages
        ``text_encoder``, ``unet``, ``vae_decoder``, ``vae_encoder``; a stage not named runs on
        CPU); ``cache_dir`` keeps compiled models between processes. ``tiny_vae``: a tiny-VAE
        folder or hub id (``rupeshs/taesd-ov``) for ``vae="tiny"`` and previews. ``loras``:
        ``[(file or hub id, weight), ...]`` LoRA adapters, blended as diffusers'
        ``set_adapters``; with an LCM-LoRA, a plain Stable Diffusion 1.5 folder; a call's
        ``lora_weights`` blends them otherwise, with no compile in ``lora_mode="runtime"``
        (``pipeline.lora_blend``). ``controlnet``: a converted ControlNet (folder or hub id), a
        ``(source, scale)`` pair, or a list of them, which calls steer with their
        ``control_image``. The options are those of ``request.LoadOptions``."""
        options = LoadOptions(
            model=model,
            revision=revision,
            tiny_vae=tiny_vae,
            device=device,
            precision=precision,
            loras=loras,
            lora_mode=lora_mode,
            controlnet=controlnet,
        )
        return cls.from_options(options, cache_dir=cache_dir, keep_models=keep_models)

    @classmethod
    def from_options(
        cls, options: LoadOptions, *, cache_dir: Path | None = None, keep_models: bool = True
    ) -> LCMPipeline:
        """``from_pretrained`` with its options as a ``LoadOptions``; a device map naming a stage
        that does not exist is refused before the model is looked for."""
        devices = Devices.of(options.device)
        model = options.model or DEFAULT_MODEL
        root = resolve_model(model, options.revision)
        folder = ModelFolder.open(root)
        return cls(
            folder,
            StageCompilers.open(devices, options.precision, cache_dir),
            keep_models=keep_models,
            hub_id=None if root == Path(model).expanduser() else str(model),
            tiny_vae=None if options.tiny_vae is None else load_tiny_vae(options.tiny_vae, folder),
            adapters=open_adapters(options.loras, folder.unet),
            lora_mode=options.lora_mode,
            controlnets=open_controlnets(options.controlnet, folder),
        )

    def load_tiny_vae(self, name: str | Path) -> None:
        """Load the tiny VAE ``name`` (a folder or hub id) for ``vae="tiny"`` and previews,
        checked against this model's latent space."""
        self.tiny_vae = load_tiny_vae(name, self.folder)

    @property
    def has_previews(self) -> bool:
        """Whether ``StepInfo.preview()`` works, that is whether a tiny VAE is loaded."""
        return self.tiny_vae is not None

    @property
    def takes_negative_prompts(self) -> bool:
        """Whether ``negative_prompt`` is accepted (``plan.takes_negative_prompts``)."""
        return takes_negative_prompts(self.folder)

    def check_prompt_options(self, request: Request) -> None:
        """Raise UsageError for a ``clip_skip`` this model cannot take, or a prompt weight that
        is not a number (``plan.check_prompt_options``)."""
        check_prompt_options(request, self.folder)

    def check_negative_prompt(self, negative_prompt: str | Sequence[str] | None) -> None:
        """Raise UsageError when ``negative_prompt`` is given to a model that takes none."""
        check_negative_prompt(negative_prompt, self.folder)

    def check_control(self, request: Request) -> None:
        """Raise UsageError when ``request``'s control pictures or scales do not go with this
        pipeline's ControlNets (nothing decoded: for a server's submission)."""
        if check_control_count(request, len(self.controlnets)) is not None:
            conditioning_scales(request.controlnet_conditioning_scale, self.controlnets)

    def __call__(
        self,
        prompt: str | Sequence[str],
        *,
        callback: StepCallback | None = None,
        progress: StageProgress | None = None,
        **fields: Any,
    ) -> GenerationResult:
        """Generate ``num_images`` images per prompt; the keywords are ``Request``'s fields (see
        its declarations: ``steps``, ``guidance_scale``, ``image``, ``strength``, ``seed``, ...).
        ``callback(StepInfo)`` is told each step (return False to cancel); ``progress`` each
        stage. ``guidance_scale`` follows diffusers: the UNet is conditioned on
        ``w = guidance_scale - 1`` (the LCM paper's own code embeds the scale unchanged, so its 8
        is diffusers' 9)."""
        return self.generate(Request(prompt, **fields), callback=callback, progress=progress)

    def check_lora_weights(self, lora_weights: Sequence[float] | None) -> None:
        """Raise UsageError when ``lora_weights`` does not give one weight per adapter loaded."""
        self.lora_blend.weights(lora_weights)

    def plan(self, request: Request, max_side: int = MAX_SIZE) -> Plan:
        """``request`` checked and resolved against this model (``pipeline.plan``), with the
        adapters' weights the call uses (``lora_weights``, by default the load weights)."""
        self._vae(request.vae)
        planned = plan(request, self.folder, self.scheduler, max_side, self.controlnets)
        blend = self.lora_blend.weights(planned.request.lora_weights)
        return replace(planned, request=replace(planned.request, lora_weights=blend))

    def generate(
        self,
        request: Request | Plan,
        *,
        callback: StepCallback | None = None,
        progress: StageProgress | None = None,
    ) -> GenerationResult:
        """Run ``request`` (or a plan of it): the pictures are checked and decoded, and a hub
        snapshot's VAE encoder fetched, before the lock is taken and anything compiles."""
        planned = request if isinstance(request, Plan) else self.plan(request)
        vae = self._vae(planned.request.vae)
        if planned.pictures is not None and (
            planned.request.latents is None or planned.mask is not None
        ):
            vae.fetch_encoder()
        with self._lock:
            clock = time.perf_counter()
            tokens = self._tokenize(planned.request)
            timings = {"tokenize": time.perf_counter() - clock}
            networks = self._networks_for(planned, _text_length(planned.request, tokens))
            networks.progress = progress
            try:
                return self._run(planned, tokens, networks, vae, callback, timings)
            finally:
                networks.progress = None

    def encode_prompt(
        self,
        prompt: str | Sequence[str],
        negative_prompt: str | Sequence[str] | None = None,
        *,
        prompt_weighting: bool = False,
        clip_skip: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(prompt_embeds, negative_prompt_embeds)``: what the UNet is fed for these prompts,
        one row per prompt (not repeated per image), float32 (batch, 77 * chunks, hidden); the
        negative prompts' only when given (a model that takes them; under classifier-free
        guidance they are padded to the prompts' chunks). As diffusers' ``encode_prompt``, or
        with ``prompt_weighting`` its community long-prompt-weighting pipeline's
        ``get_weighted_text_embeddings``."""
        request = Request(
            prompt,
            negative_prompt=negative_prompt,
            prompt_weighting=prompt_weighting,
            clip_skip=clip_skip,
        )
        planned = self.plan(request)
        with self._lock:
            tokens = self._tokenize(planned.request)
            networks = self._networks_for(planned, _text_length(planned.request, tokens))
            prompt_embeds, negative_embeds = self._encode(planned.request, tokens, networks, {})
        return prompt_embeds.copy(), None if negative_prompt is None else negative_embeds.copy()

    def _run(
        self,
        planned: Plan,
        tokens: tuple[TokenizedText, TokenizedText | None],
        networks: CompiledNetworks,
        vae: Vae,
        callback: StepCallback | None,
        timings: dict[str, float],
    ) -> GenerationResult:
        """The algorithm, from the prompts' ``tokens`` (``_tokenize``) on."""
        request, schedule, latent_shape = planned.request, planned.schedule, planned.latent_shape
        generator = TorchGenerator(request.seed)

        # encode: diffusers' batch order under guidance is [negative prompts; prompts]
        text_embeddings, negative_embeddings = self._encode(request, tokens, networks, timings)
        if negative_embeddings is not None:
            text_embeddings = np.concatenate([negative_embeddings, text_embeddings])
        prompt_embeds = np.repeat(text_embeddings, request.num_images, axis=0)

        # latents: pure noise, or the pictures encoded and noised to the first timestep;
        # inpainting, as diffusers' (pipeline.inpainting), with the mask at the latents' size
        latents, inpainting = request.latents, None
        if planned.mask is not None:
            latents, inpainting = self._inpainting(planned, networks, vae, generator, timings)
        elif latents is None and planned.pictures is None:
            latents = generator.randn(latent_shape)
        elif latents is None:
            pixels = preprocess(planned.pictures, request.width, request.height)
            latents = self._picture_latents(
                networks, vae, pixels, int(schedule[0]), generator, timings
            )
        latents = np.ascontiguousarray(latents, dtype=np.float32)
        guidance_embedding = None
        if self.folder.time_cond_proj_dim is not None:
            guidance_embedding = guidance_scale_embedding(
                request.guidance_scale, latent_shape[0], self.folder.time_cond_proj_dim
            )

        # the loop: the UNet's prediction (+ the ControlNets'), then the LCM step (which draws the
        # next noise)
        steered = planned.control_pictures is not None
        controlnets = networks.controlnets() if steered else []
        unet = networks.unet(controlnets)
        control = Control.none()
        if steered:
            control = Control.prepare(
                request, planned.control_pictures, controlnets, len(schedule), planned.guided
            )
        preview = None if self.tiny_vae is None else partial(self._decode, networks, self.tiny_vae)
        denoised = latents
        networks.report("steps", 0, len(schedule))
        unet_input = None if inpainting is None else inpainting.unet_input
        for i, t in enumerate(schedule):
            clock = time.perf_counter()
            # unet(+controlnet); a 9-channel UNet's input adds the mask and masked pictures
            denoise = control.steered(unet, i, unet_input)
            if planned.guided:
                model_output = classifier_free.guided_noise(
                    denoise(np.concatenate([latents, latents]), int(t), prompt_embeds, None),
                    request.guidance_scale,
                )
            else:
                model_output = denoise(latents, int(t), prompt_embeds, guidance_embedding)
            last = i == len(schedule) - 1
            noise = None if last else generator.randn(latent_shape)
            next_timestep = None if last else int(schedule[i + 1])
            latents, denoised = self.scheduler.step(
                model_output, int(t), next_timestep, latents, noise
            )
            if inpainting is not None:  # a 4-channel UNet: the area to keep put back
                latents, denoised = inpainting.after_step(latents, denoised, next_timestep)
            timings[f"unet_step_{i + 1}"] = time.perf_counter() - clock
            networks.report("steps", i + 1, len(schedule))
            info = StepInfo(i + 1, len(schedule), int(t), latents, denoised, preview)
            if callback is not None and callback(info) is False:
                raise Cancelled(f"cancelled by the step callback after step {i + 1}")
        # without keep_models, this frees the UNet (and ControlNets) before the VAE decoder compiles
        del unet, controlnets, control, denoise

        # decode (with padding_mask_crop: pasted back into the picture)
        images = self._decode(networks, vae, denoised, timings)
        if planned.crop is not None:
            images = planned.crop.paste_back(images)
        timings.update(networks.take_seconds())
        settings = Settings(
            replace(
                request,
                latents=None,
                image=_picture_names(request.image),
                control_image=_picture_names(request.control_image),
                mask_image=_picture_names(request.mask_image),
            ),
            tuple(int(t) for t in schedule),
            tuple((adapter.source, adapter.weight) for adapter in self.adapters),
            self._tiny_vae_source(vae),
            tuple(
                (choice.folder.source, scale)
                for choice, scale in zip(
                    self.controlnets, request.controlnet_conditioning_scale or (), strict=False
                )
            ),
            picture_digests=tuple(picture_digests(request).items()),
        )
        control_images = [
            picture for loaded in planned.control_pictures or [] for picture in loaded
        ]
        return GenerationResult(
            images, generator.seed, timings, tokens[0].dropped_tokens, settings, control_images
        )

    def _tokenize(self, request: Request) -> tuple[TokenizedText, TokenizedText | None]:
        """The prompts' and (under classifier-free guidance) negative prompts' tokens: plain, or
        with ``prompt_weighting`` weighted and cut into as many chunks as the longest needs."""
        negative_prompts = (
            None if request.negative_prompt is None else list(request.negative_prompt)
        )
        return self.prompt_encoder.tokenize(
            request.prompts, negative_prompts, weighting=request.prompt_weighting
        )

    def _encode(
        self,
        request: Request,
        tokens: tuple[TokenizedText, TokenizedText | None],
        networks: CompiledNetworks,
        timings: dict[str, float],
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The prompts' embeddings, and the negative prompts' (None without guidance); those
        the request gives (``prompt_embeds``, ``negative_prompt_embeds``) as they are."""
        encode = partial(
            self.prompt_encoder.encode,
            clip_skip=request.clip_skip,
            text_encoder=networks.text_encoder,
            timings=timings,
            blend=networks.blend,
        )
        prompt_tokens, negative_tokens = tokens
        prompt_embeds, negative_embeds = request.prompt_embeds, request.negative_prompt_embeds
        if prompt_embeds is None:
            prompt_embeds = encode(prompt_tokens)
        if negative_embeds is None and negative_tokens is not None:
            negative_embeds = encode(negative_tokens)
        return _float32(prompt_embeds), None if negative_embeds is None else _float32(
            negative_embeds
        )

    def _inpainting(
        self,
        planned: Plan,
        networks: CompiledNetworks,
        vae: Vae,
        generator: TorchGenerator,
        timings: dict[str, float],
    ) -> tuple[np.ndarray, Inpainting]:
        """diffusers' inpainting ``prepare_latents`` and ``prepare_mask_latents``
        (``pipeline.inpainting``): the starting latents and what each step needs."""
        request = planned.request
        encoder = networks.encoder(vae)

        def encode(name: str, pixels: np.ndarray) -> np.ndarray:
            clock = time.perf_counter()
            latents = encoder(pixels, generator)
            timings[name] = time.perf_counter() - clock
            return latents

        return prepare_inpainting(
            preprocess(planned.pictures, request.width, request.height),
            planned.mask,
            latent_shape=planned.latent_shape,
            unet_channels=self.folder.unet_channels,
            strength=request.strength,
            first_timestep=int(planned.schedule[0]),
            latents=request.latents,
            encode=encode,
            encoder_draws=not vae.encoder_config().is_tiny,
            generator=generator,
            scheduler=self.scheduler,
            scale=self.folder.vae_scale_factor,
        )

    def _picture_latents(
        self,
        networks: CompiledNetworks,
        vae: Vae,
        pixels: np.ndarray,
        first_timestep: int,
        generator: TorchGenerator,
        timings: dict[str, float],
    ) -> np.ndarray:
        """diffusers' img2img ``prepare_latents``: the pictures' latents by the VAE in use's
        encoder (a draw for the posterior sample of an AutoencoderKL, none for an
        AutoencoderTiny), tiled over the batch, noised to the first timestep (a second draw)."""
        vae_encoder = networks.encoder(vae)
        clock = time.perf_counter()
        picture_latents = vae_encoder(pixels, generator)
        timings["vae_encoder"] = time.perf_counter() - clock
        batch_latents = repeat_for_batch(picture_latents, networks.shapes.latent_shape[0])
        noise = generator.randn(batch_latents.shape)
        return self.scheduler.add_noise(batch_latents, noise, first_timestep)

    def _decode(
        self,
        networks: CompiledNetworks,
        vae: Vae,
        denoised: np.ndarray,
        timings: dict[str, float] | None = None,
    ) -> list[Image.Image]:
        """``denoised`` latents to images with ``vae``'s decoder, which takes
        ``latents / scaling_factor + shift_factor`` from its own config. Serialised, since a
        preview (``timings`` None) may run in another thread."""
        with self._decode_lock:
            decoder = networks.decoder(vae)
            if timings is None:  # a preview
                return to_pil(decoder(vae.config.decoder_input(denoised)))
            networks.report("decode", 0, 1)
            clock = time.perf_counter()
            images = to_pil(decoder(vae.config.decoder_input(denoised)))
            timings["vae_decoder"] = time.perf_counter() - clock
            networks.report("decode", 1, 1)
            return images

    def _networks_for(self, planned: Plan, text_length: int) -> CompiledNetworks:
        """The networks for this batch and size: compiled on first use, compiled again (with new
        static shapes) only when the size, the batch, classifier-free guidance, guess mode or the
        text length (chunks of a long prompt) changes, or when the LoRA blend does and its
        weights are compiled in (``LoraBlend.branches``)."""
        shapes = Shapes(
            len(planned.request.prompts),
            planned.latent_shape,
            planned.guided,
            text_length,
            planned.request.guess_mode,
        )
        branches = self.lora_blend.branches(planned.request.lora_weights)
        networks = self._networks
        if networks is None or networks.shapes != shapes:
            networks = self._networks = self.networks_class(
                shapes,
                self.compiler,
                self.folder,
                branches,
                self.tokenizer.model_max_length,
                self.keep_models,
                [choice.folder for choice in self.controlnets],
            )
        networks.use_branches(branches)
        networks.blend = planned.request.lora_weights or ()
        return networks

    def _vae(self, choice: str) -> Vae:
        """The VAE ``vae=choice`` names (``Request.check`` has checked the choice); a UsageError
        when it is the tiny one and none is loaded."""
        if choice == "tiny" and self.tiny_vae is None:
            raise UsageError(
                'vae="tiny" needs a tiny VAE: LCMPipeline.from_pretrained(..., tiny_vae=FOLDER or '
                "HUB_ID) (command line: --tiny-vae, default rupeshs/taesd-ov)"
            )
        return self.tiny_vae if choice == "tiny" else self.vae

    def _tiny_vae_source(self, vae: Vae) -> str | None:
        """What metadata records of the decoder: the tiny VAE's folder, when it made the image
        and is not the model's own decoder."""
        if vae.kind != "tiny" or vae.root == self.folder.root:
            return None
        return str(vae.root)


def _text_length(request: Request, tokens: tuple[TokenizedText, TokenizedText | None]) -> int:
    """The tokens the UNet reads: 77 per chunk, or ``prompt_embeds``' length; negative prompts
    encoded from text must be as long."""
    if request.prompt_embeds is None:
        return tokens[0].text_length
    length = request.prompt_embeds.shape[1]
    negative_tokens = tokens[1]
    encoded = request.negative_prompt_embeds is None and negative_tokens is not None
    if encoded and negative_tokens.text_length != length:
        raise UsageError(
            f"the negative prompts encode to {negative_tokens.text_length} tokens, "
            f"prompt_embeds has {length}: give negative_prompt_embeds too"
        )
    return length


def _float32(embeddings: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(embeddings, dtype=np.float32)


def _picture_names(image: object) -> str | None:
    """What the settings keep of the starting pictures: their file names, not their pixels."""
    return None if image is None else picture_name(image)


def _call_signature() -> inspect.Signature:
    """``pipe(prompt, *, <Request's fields>, callback, progress)``, for ``help(pipe)``."""
    own = list(inspect.signature(LCMPipeline.__call__).parameters.values())
    fields = list(inspect.signature(Request).parameters.values())[1:]
    return inspect.Signature([*own[:2], *fields, *own[2:4]])


LCMPipeline.__call__.__signature__ = _call_signature()
