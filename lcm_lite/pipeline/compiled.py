"""The networks compiled for one batch size and resolution (OpenVINO static shapes), and the
memory policy: with ``keep_models`` each is held for the next call of the same shape; without,
each is compiled when used and freed after (a tiny VAE's decoder, a few MB that previews use every
step, is always held). Each network compiles for its stage's device (``StageCompilers``); a tiny
VAE's decoder and encoder are the ``vae_decoder`` and ``vae_encoder`` stages."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from lcm_lite.models.controlnet import ControlNet, ControlNetFolder
from lcm_lite.models.folder import ModelFolder
from lcm_lite.models.lora_branches import Branches
from lcm_lite.models.networks import TextEncoder, UNet, VAEDecoder, VAEEncoder
from lcm_lite.models.vae import Vae
from lcm_lite.runtime.compiler import StageCompilers

log = logging.getLogger("lcm_lite")


class StageProgress(Protocol):
    """Told where a call is: ``(stage, 0, total)`` when a stage starts, ``(stage, done, total)``
    as it advances. Stages: "compile <network>", "steps", "decode". The CLI's progress bars."""

    def __call__(self, stage: str, done: int, total: int) -> None: ...


@dataclass(frozen=True)
class Shapes:
    """What the static shapes depend on; the UNet's batch is doubled under classifier-free
    guidance, the ControlNets' too unless in ``guess_mode``; ``text_length``: the tokens the
    UNet reads, 77 per chunk of a long prompt."""

    num_prompts: int
    latent_shape: tuple[int, ...]
    guided: bool
    text_length: int = 77
    guess_mode: bool = False

    @property
    def unet_batch(self) -> int:
        return self.latent_shape[0] * (2 if self.guided else 1)

    @property
    def controlnet_batch(self) -> int:
        return self.latent_shape[0] if self.guess_mode and self.guided else self.unet_batch


_Network = TypeVar("_Network", TextEncoder, UNet, VAEDecoder, VAEEncoder, ControlNet)
_Blendable = TypeVar("_Blendable", TextEncoder, UNet)


class CompiledNetworks:
    """The networks of one ``Shapes``, compiled on first use, each by its stage's compiler in
    ``compilers``, the text encoder and UNet with the LoRA ``branches``; ``seconds`` says how long
    each compile (or cache import) took since the last ``take_seconds``. With ``controlnets``,
    they run on the UNet's device, and the UNet takes their residuals. ``blend``: the adapters'
    weights the networks are given when the weights are an input (``Branches.runtime``)."""

    def __init__(
        self,
        shapes: Shapes,
        compilers: StageCompilers,
        folder: ModelFolder,
        branches: Branches,
        chunk_length: int,
        keep_models: bool,
        controlnets: Sequence[ControlNetFolder] = (),
    ) -> None:
        self.shapes = shapes
        self.controlnet_folders = list(controlnets)
        self.compilers = compilers
        self.folder = folder
        self.branches = branches
        self.blend: Sequence[float] = ()
        self.chunk_length = chunk_length  # the text encoder's input length
        self.keep_models = keep_models
        self.progress: StageProgress | None = None
        self._held: dict[object, object] = {}
        self._seconds: dict[str, float] = {}

    def text_encoder(self, clip_skip: int | None = None) -> TextEncoder:
        """The text encoder, giving the hidden state ``clip_skip`` layers before the last (through
        the final layer norm) if that is set."""
        shape = self.shapes.num_prompts
        return self._blended(
            "text_encoder",
            "text encoder",
            lambda: TextEncoder(
                self.compilers.for_stage("text_encoder"),
                self.folder,
                shape,
                self.chunk_length,
                self.branches,
                clip_skip,
            ),
            key=("text_encoder", clip_skip),
        )

    def unet(self, controlnets: Sequence[ControlNet] = ()) -> UNet:
        """The UNet (its input channels: 4, or 9 for an inpainting UNet); with ``controlnets``
        (``self.controlnets()``), taking their residuals (at the UNet's batch)."""
        _, _, *latent_size = self.shapes.latent_shape
        unet_shape = (self.shapes.unet_batch, self.folder.unet_channels, *latent_size)
        residual_shapes = [
            (self.shapes.unet_batch, *shape[1:])
            for shape in (controlnets[0].residual_shapes if controlnets else [])
        ]
        return self._blended(
            "unet",
            "UNet",
            lambda: UNet(
                self.compilers.for_stage("unet"),
                self.folder,
                unet_shape,
                self.shapes.text_length,
                self.branches,
                residual_shapes,
            ),
            key=("unet", bool(residual_shapes)),
        )

    def controlnets(self) -> list[ControlNet]:
        """Each ControlNet, compiled for the ControlNets' batch on the UNet's device."""
        _, *latent_size = self.shapes.latent_shape
        shape = (self.shapes.controlnet_batch, *latent_size)
        return [
            self._get(
                f"controlnet_{index}",
                f"ControlNet {folder.source}",
                lambda folder=folder: ControlNet(
                    self.compilers.for_stage("unet"), folder, shape, self.shapes.text_length
                ),
            )
            for index, folder in enumerate(self.controlnet_folders)
        ]

    def decoder(self, vae: Vae) -> VAEDecoder:
        label = f"{vae.label} decoder"
        return self._get(
            f"{vae.name}_decoder",
            label,
            lambda: VAEDecoder(
                self.compilers.for_stage("vae_decoder"), vae.xml, self.shapes.latent_shape, label
            ),
            key=vae.xml,  # a model whose own decoder is TAESD: one network for both choices
            always_hold=vae.config.is_tiny,
        )

    def encoder(self, vae: Vae) -> VAEEncoder:
        label = f"{vae.label} encoder"
        return self._get(
            f"{vae.name}_encoder",
            label,
            lambda: VAEEncoder(
                self.compilers.for_stage("vae_encoder"),
                vae.encoder_xml,
                vae.encoder_config(),
                self.shapes.latent_shape,
                label,
            ),
            key=vae.encoder_xml,
        )

    def take_seconds(self) -> dict[str, float]:
        """The compile times since the last call, as ``compile_<network>`` timings."""
        seconds, self._seconds = self._seconds, {}
        return seconds

    def use_branches(self, branches: Branches) -> None:
        """Compile the text encoder and UNet with ``branches`` from now on: the held ones go if
        they differ (the VAE's networks and the ControlNets stay)."""
        if branches != self.branches:
            self.branches = branches
            for key in list(self._held):
                if isinstance(key, tuple) and key[0] in ("unet", "text_encoder"):
                    del self._held[key]

    def _blended(
        self, name: str, label: str, build: Callable[[], _Blendable], key: object = None
    ) -> _Blendable:
        """The network ``_get`` gives, fed this call's ``blend`` if it takes one."""
        network = self._get(name, label, build, key=key)
        if self.branches.runtime:
            network.blend(self.blend)
        return network

    def _get(
        self,
        name: str,
        label: str,
        build: Callable[[], _Network],
        key: object = None,
        always_hold: bool = False,
    ) -> _Network:
        """The held network ``key`` (default ``name``), or ``build()`` it, reported as the stage
        "compile <label>" and timed as ``compile_<name>``; held for the next call with
        ``keep_models`` (or ``always_hold``)."""
        key = name if key is None else key
        network = self._held.get(key)
        if network is not None:
            return network
        stage = f"compile {label}"
        if self.progress is None:  # else the progress shows it
            size = "x".join(map(str, self.shapes.latent_shape))
            log.info("compiling the %s for %s", label, size)
        self.report(stage, 0, 1)
        clock = time.perf_counter()
        network = build()
        self._seconds[f"compile_{name}"] = time.perf_counter() - clock
        self.report(stage, 1, 1)
        if self.keep_models or always_hold:
            self._held[key] = network
        return network

    def report(self, stage: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(stage, done, total)
