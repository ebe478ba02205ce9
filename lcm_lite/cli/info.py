"""``lcm-lite info``: on a model, its folder, each network's inputs and the device it would run on
(``--device``), the devices, the cache; on a PNG, the settings it stores and the command that
makes it again."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from lcm_lite.cli.common import PROG, Parser, model_options
from lcm_lite.errors import UsageError
from lcm_lite.fields import Devices
from lcm_lite.models.folder import COMPONENTS, ModelFolder, component_files
from lcm_lite.models.vae import load_tiny_vae, own_tiny_vae
from lcm_lite.runtime.blob_cache import cache_size_limit, cache_usage
from lcm_lite.runtime.compiler import Compiler, describe_devices, unavailable_devices


def describe(
    root: Path,
    cache_dir: Path | None,
    tiny_vae: str | None = None,
    devices: str | Mapping[str, str] | Devices = "CPU",
) -> str:
    """What ``lcm-lite info`` prints: the folder, each network's inputs and the device of its
    stage in ``devices`` (marked when OpenVINO does not see it), the tiny VAE (``tiny_vae``, or
    the model's own TAESD decoder), the devices, the cache."""
    devices = Devices.of(devices)
    folder = ModelFolder.open(root)
    compiler = Compiler()

    def on(stage: str) -> str:
        device = devices.of_stage(stage)
        absent = unavailable_devices(device, compiler.core.available_devices)
        return f"on {device}{' (not available here)' if absent else ''}"

    guidance = folder.time_cond_proj_dim or "none (Stable Diffusion: runs with an LCM-LoRA)"
    lines = [
        f"model: {folder.root}",
        f"native size: {folder.default_size}x{folder.default_size}, "
        f"guidance embedding dim: {guidance}",
    ]
    for component in (*COMPONENTS, "vae_encoder"):
        files = component_files(folder.root, component)
        if not files.xml.is_file():  # only the VAE encoder is optional
            lines.append(f"{component}: none (image to image needs it: see --with-vae-encoder)")
            continue
        model = compiler.read(files.xml)
        size_mb = files.weights.stat().st_size / 2**20
        lines.append(f"{component}: {size_mb:.1f} MB, {on(component)}")
        for port in model.inputs:
            lines.append(
                f"  input {port.any_name}: {port.get_element_type().get_type_name()} "
                f"{port.get_partial_shape()}"
            )
    tiny = own_tiny_vae(folder) if tiny_vae is None else load_tiny_vae(tiny_vae, folder)
    if tiny is not None:
        lines.append(
            f"tiny VAE (previews, --vae tiny): {tiny.root} ({tiny.config.class_name}, "
            f"scaling factor {tiny.config.scaling_factor:g}), decoder {on('vae_decoder')}"
        )
    lines.append(f"devices: {describe_devices(compiler.core)}")
    if cache_dir is None:
        lines.append("compiled-model cache: off")
    else:
        used = cache_usage(cache_dir) if cache_dir.is_dir() else 0
        lines.append(
            f"compiled-model cache: {cache_dir} ({used / 2**20:.1f} MB used of "
            f"{cache_size_limit() / 2**20:.0f} MB, LCM_LITE_CACHE_SIZE)"
        )
    return "\n".join(lines)


def info(argv: list[str]) -> int:
    """``lcm-lite info [IMAGE]``."""
    parser = Parser(
        prog=f"{PROG} info",
        description="Describe a model (components, input shapes, devices, cache) "
        "or print the generation settings stored in an lcm-lite PNG.",
    )
    parser.add_argument("image", nargs="?", type=Path, help="a PNG written by lcm-lite")
    model_options(parser)
    args = parser.parse_args(argv)
    if args.image is not None:
        from lcm_lite.cli.remake import remake_command
        from lcm_lite.images.png import read_png_metadata

        if not args.image.is_file():
            raise UsageError(f"no such file: {args.image}")
        try:
            metadata = read_png_metadata(args.image)
        except OSError as error:
            raise UsageError(f"{args.image} is not a PNG image: {error}") from None
        if not metadata:
            raise UsageError(f"{args.image} carries no lcm-lite metadata")
        for key, value in metadata.items():
            print(f"{key}: {value}")
        try:
            print(f"remake: {remake_command(metadata)}")
        except UsageError as error:  # a value edited by hand: the settings are still shown
            print(f"remake: not possible, {error}")
        return 0
    from lcm_lite.models.hub import resolve_model
    from lcm_lite.runtime.blob_cache import default_cache_dir

    cache_dir = None if args.no_cache else default_cache_dir()
    model = resolve_model(args.model, args.revision)
    print(describe(model, cache_dir, args.tiny_vae, args.device or "CPU"))
    return 0
