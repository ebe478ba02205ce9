"""A ControlNet (diffusers' ``ControlNetModel``) as ``lcm-lite-convert`` writes it: a folder with
``controlnet/openvino_model.xml``, ``.bin`` and ``config.json`` (or those three files directly).

Its network takes the UNet's ``sample``, ``timestep`` and ``encoder_hidden_states`` and the
control picture ``controlnet_cond`` (RGB in [0, 1], 8x the latent size) and returns one residual
per skip connection of the UNet (``down_block_res_sample_<i>``, 12 for SD 1.5) and one for its
mid block (``mid_block_res_sample``), unscaled: ``conditioning_scale`` multiplies them outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import openvino as ov

from lcm_lite.errors import ModelError, UsageError
from lcm_lite.models.configs import ControlNetConfig
from lcm_lite.models.folder import ModelFolder, component_files
from lcm_lite.models.hub import resolve
from lcm_lite.models.networks import timestep_shape
from lcm_lite.runtime.compiler import Compiler

CONTROLNET_FILES = ["controlnet/*"]
CONVERT_CONTROLNET = (
    "convert a diffusers ControlNetModel with `lcm-lite-convert SOURCE FOLDER` "
    "(e.g. lllyasviel/control_v11p_sd15_canny)"
)


@dataclass(frozen=True)
class ControlNetFolder:
    """A converted ControlNet: its IR, and its config (whose numbers must match the UNet's)."""

    source: str  # as given: a folder or a hub id (what the metadata records)
    xml: Path
    config: ControlNetConfig

    @classmethod
    def open(cls, source: str | Path, revision: str | None = None) -> ControlNetFolder:
        """The ControlNet ``source`` names: a folder, or a hub repository of the converted one
        (fetched as a model is, see ``hub``)."""
        root = resolve(
            str(source),
            revision,
            what="ControlNet",
            files=CONTROLNET_FILES,
            option="--controlnet",
            alternative=CONVERT_CONTROLNET,
        )
        files = component_files(root, "controlnet")
        if not files.xml.is_file() and (root / "openvino_model.xml").is_file():
            files = component_files(root.parent, root.name)
        for path in files:
            if not path.is_file():
                raise ModelError(
                    f"{source} is not a converted ControlNet: {path} is missing "
                    f"({CONVERT_CONTROLNET})"
                )
        config = ControlNetConfig.read(files.config)
        if config._class_name != "ControlNetModel":
            raise ModelError(
                f"{files.config} describes a {config._class_name or 'model'}, not a ControlNetModel"
            )
        return cls(str(source), files.xml, config)

    def check_base(self, folder: ModelFolder) -> None:
        """A UsageError when this ControlNet was trained for another base model than
        ``folder``'s: its channels, text width or latent size differ from the UNet's and VAE's
        (an SD 2.x or SDXL ControlNet on an SD 1.5 model). It takes the latents alone: an
        inpainting UNet's 9 input channels are the latents' 4, the mask and the masked picture's
        latents."""
        mine, unet = self.config, folder.unet
        if (
            mine.in_channels,
            mine.block_out_channels,
            mine.cross_attention_dim,
            mine.pixels_per_latent,
        ) != (
            folder.latent_channels,
            unet.block_out_channels,
            unet.cross_attention_dim,
            folder.vae_scale_factor,
        ):
            raise UsageError(
                f"the ControlNet {self.source} is for another base model: its input channels "
                f"{mine.in_channels}, channels {list(mine.block_out_channels)} and text width "
                f"{mine.cross_attention_dim} do not match the latents' {folder.latent_channels}, "
                f"the UNet's {list(unet.block_out_channels)} and {unet.cross_attention_dim}"
            )


class ControlNet:
    """The compiled ControlNet for one latent shape: ``(sample, timestep,
    encoder_hidden_states, controlnet_cond) -> [down residuals..., mid residual]``."""

    def __init__(
        self,
        compiler: Compiler,
        controlnet: ControlNetFolder,
        latent_shape: tuple[int, ...],
        text_length: int,
    ) -> None:
        batch, _, height, width = latent_shape
        scale = controlnet.config.pixels_per_latent

        def shapes(model: ov.Model) -> dict[int, tuple[object, ...]]:
            names = [port.get_names() for port in model.inputs]
            index = {name: i for i, port_names in enumerate(names) for name in port_names}
            missing = [n for n in _INPUTS if n not in index]
            if missing:
                raise ModelError(
                    f"{controlnet.xml} has no {', '.join(missing)} input: not a ControlNet export"
                )
            return {
                index["sample"]: latent_shape,
                index["timestep"]: timestep_shape(model.inputs[index["timestep"]]),
                index["encoder_hidden_states"]: (
                    batch,
                    text_length,
                    controlnet.config.cross_attention_dim,
                ),
                index["controlnet_cond"]: (batch, 3, height * scale, width * scale),
            }

        compiled = compiler.compile(
            controlnet.xml, shapes, (latent_shape, text_length), f"ControlNet {controlnet.source}"
        )
        self.inputs = {name: compiled.input(name) for name in _INPUTS}
        timestep_port = self.inputs["timestep"]
        self.timestep_type = timestep_port.get_element_type().to_dtype()
        self.timestep_shape = timestep_shape(timestep_port)
        self.residual_shapes = [tuple(port.get_shape()) for port in compiled.outputs]
        self.compiled = compiled  # the request needs it alive
        self.request = compiled.create_infer_request()

    def __call__(
        self,
        sample: np.ndarray,
        timestep: int,
        encoder_hidden_states: np.ndarray,
        controlnet_cond: np.ndarray,
    ) -> list[np.ndarray]:
        """The residuals (down blocks', then the mid block's), each a view valid until the next
        call."""
        self.request.infer(
            {
                self.inputs["sample"]: sample,
                self.inputs["timestep"]: np.full(self.timestep_shape, timestep, self.timestep_type),
                self.inputs["encoder_hidden_states"]: encoder_hidden_states,
                self.inputs["controlnet_cond"]: controlnet_cond,
            },
            share_inputs=True,
        )
        return [self.request.get_output_tensor(i).data for i in range(len(self.residual_shapes))]


_INPUTS = ("sample", "timestep", "encoder_hidden_states", "controlnet_cond")
