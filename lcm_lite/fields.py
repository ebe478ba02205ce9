"""How a declared field is described, checked and written as text.

A dataclass field declared with ``spec(Spec(...), default)`` carries its help text, its kind,
its limits and its names elsewhere (PNG metadata key, command-line option, HTTP names). From
these, generic code checks values (``check_value``), reads and writes them as text (``PARSERS``,
``as_text``) and records them (``metadata_of`` / ``from_metadata``); ``request.Request`` and
``request.LoadOptions`` are declared this way.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from lcm_lite.errors import UsageError

Kind = Literal[
    "text",
    "integer",
    "number",
    "numbers",
    "flag",
    "choice",
    "picture",
    "integers",
    "array",
    "loras",
    "devices",
]


@dataclass(frozen=True)
class Range:
    """``low <= value <= high`` (``<`` on a side that is exclusive), a multiple of
    ``multiple_of`` if set; ``high`` None: no upper bound here."""

    low: float
    high: float | None = None
    multiple_of: int | None = None
    low_exclusive: bool = False
    high_exclusive: bool = False
    described: str | None = None  # what an error says instead of "from low to high"

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_exclusive else value >= self.low
        below = self.high is None or (
            value < self.high if self.high_exclusive else value <= self.high
        )
        return above and below


@dataclass(frozen=True)
class Spec:
    """How one field is named, told and checked everywhere.

    ``key``: its name in the PNG metadata, on the command line (``--key``, unless ``option``
    says otherwise) and in lcm-lite's own HTTP API; None for a Python-only field. ``limits``: the
    pipeline's; ``served``: the server's tighter ones. ``openai``: its name on the OpenAI / OVMS
    images API, if it has one there. ``needs``: the field it only means something with (it is
    neither recorded nor accepted on the command line without it). ``served_over_http``: False for
    fields the server does not take."""

    help: str
    kind: Kind
    key: str | None = None
    option: str | None = None
    metavar: str | None = None
    limits: Range | None = None
    served: Range | None = None
    choices: tuple[str, ...] = ()
    openai: str | None = None
    needs: str | None = None
    served_over_http: bool = True
    default_help: str | None = None  # the default, when the field's own (None, ...) says little
    fallback: Any = None  # what None becomes when nothing else decides (width: 512)
    repeatable: bool = False  # on the command line: given once per item (--control-image)
    count: int | None = None  # a list's exact number of items (outpaint: 4)

    @property
    def flag(self) -> str | None:
        """The command-line option, e.g. ``--num-images``; None if it has none (an array has
        none: it is given in Python)."""
        if self.kind == "array":
            return None
        if self.option is not None or self.key is None:
            return self.option
        return "--" + self.key.replace("_", "-")


def spec(field_spec: Spec, default: Any = None) -> Any:
    """A dataclass field with ``default`` and its ``Spec`` as metadata."""
    return field(default=default, metadata={"spec": field_spec})


def specs(declared: type) -> dict[str, Spec]:
    """Each field's ``Spec``, in declaration order."""
    return {
        item.name: item.metadata["spec"] for item in fields(declared) if "spec" in item.metadata
    }


def picture_fields(declared: type) -> list[str]:
    """The names of the fields that hold pictures (``image``, ``mask_image``)."""
    return [name for name, field_spec in specs(declared).items() if field_spec.kind == "picture"]


# -- text: what the metadata and the command line carry -------------------------------------------


def check_prompts(prompts: list[str]) -> None:
    """Prompts are UTF-8 strings without NUL; there is at least one."""
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


def check_value(
    name: str, field_spec: Spec, value: Any, limits: Range | None, optional: bool = True
) -> None:
    """One field's value against its kind and ``limits``; None passes where the field is
    ``optional`` (its default is None: not given), and is refused where it is not."""
    if value is None and optional:
        return
    if field_spec.kind == "choice" and value not in field_spec.choices:
        choices = " or ".join(f'"{choice}"' for choice in field_spec.choices)
        raise UsageError(f"{name} must be {choices}, got {value!r}")
    if field_spec.kind == "integer":
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise UsageError(
                f"{name} must be {(limits and limits.described) or 'an integer'}, got {value!r}"
            )
        if limits is not None and not limits.contains(value) and limits.described:
            raise UsageError(f"{name} must be {limits.described}, got {value!r}")
        if limits is not None and not limits.contains(value):
            high = "the schedule length" if limits.high is None else _bound(limits.high)
            raise UsageError(f"{name} must be from {_bound(limits.low)} to {high}, got {value}")
        if limits is not None and limits.multiple_of and value % limits.multiple_of:
            raise UsageError(f"{name} must be a multiple of {limits.multiple_of}, got {value}")
    if field_spec.kind == "number" and not _is_number_in(value, limits):
        raise UsageError(f"{name} must be {_number_range(limits)}, got {value!r}")
    if field_spec.kind == "numbers":
        values = [value] if isinstance(value, numbers.Real) else value
        if (
            not isinstance(values, (list, tuple))
            or not values
            or not all(_is_number_in(item, limits) for item in values)
        ):
            raise UsageError(
                f"{name} must be {_number_range(limits)} or a list of them, got {value!r:.60}"
            )
    if field_spec.kind == "integers" and field_spec.count is not None:
        items = value if isinstance(value, (list, tuple)) else [value]
        if len(items) != field_spec.count or not all(
            isinstance(item, numbers.Integral)
            and not isinstance(item, bool)
            and (limits is None or limits.contains(item))
            for item in items
        ):
            low, high = (0, 0) if limits is None else (limits.low, limits.high)
            within = "" if limits is None else f" from {_bound(low)} to {_bound(high)}"
            raise UsageError(
                f"{name} must be {field_spec.count} integers{within}, got {value!r:.60}"
            )
    if field_spec.kind == "flag" and not isinstance(value, bool):
        raise UsageError(f"{name} must be True or False, got {value!r}")


def _is_number_in(value: Any, limits: Range | None) -> bool:
    """A finite real (not a bool) within ``limits``."""
    is_number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    return is_number and math.isfinite(value) and (limits is None or limits.contains(value))


def _number_range(limits: Range | None) -> str:
    if limits is None:
        return "a finite number"
    if limits.high is None:
        return f"a finite number >= {_bound(limits.low)}"
    opening = "(" if limits.low_exclusive else "["
    return f"a number in {opening}{_bound(limits.low)}, {_bound(limits.high)}]"


def _bound(value: float) -> str:
    """A limit as people write it: 8, 0.5, 18446744073709551615."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def picture_name(image: object) -> str:
    """The file name a starting picture came from, for the metadata ("" if none)."""
    if isinstance(image, (list, tuple)):
        return ", ".join(picture_name(item) for item in image)
    if isinstance(image, (str, Path)):
        return Path(image).name
    return Path(getattr(image, "filename", "") or "").name


DIGEST_HEX_DIGITS = 16


def picture_digest(image: object) -> str:
    """The first ``DIGEST_HEX_DIGITS`` hex digits of the SHA-256 of a starting picture's file
    (as ``sha256sum`` prints it) or bytes, for the metadata; "" for a picture held in memory
    (a PIL image, an array). A list's, joined by ", "."""
    if isinstance(image, (list, tuple)):
        return ", ".join(picture_digest(item) for item in image)
    if isinstance(image, (str, Path)) and Path(image).is_file():
        image = Path(image).read_bytes()
    if isinstance(image, (bytes, bytearray, memoryview)):
        return hashlib.sha256(image).hexdigest()[:DIGEST_HEX_DIGITS]
    return ""


def picture_digests(request: Any) -> dict[str, str]:
    """``{"<key>_sha256": digest}`` of each picture field of ``request`` that came from a file
    or bytes: the metadata says which picture (``picture_name``) and that it is that one."""
    digests = {}
    for name, field_spec in specs(type(request)).items():
        value = getattr(request, name)
        if field_spec.kind == "picture" and field_spec.key and value is not None:
            digest = picture_digest(value)
            if digest.strip(", "):
                digests[f"{field_spec.key}_sha256"] = digest
    return digests


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected an integer, got {text!r}") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"expected a number, got {text!r}") from None


def number_list(text: str) -> list[float]:
    """Comma-separated numbers (``0.7,0.3``), as the metadata writes a ``numbers`` field."""
    try:
        return [float(word) for word in text.split(",")]
    except ValueError:
        raise ValueError(f"expected numbers separated by commas, got {text!r}") from None


def boolean(text: str) -> bool:
    """A ``flag`` field as the metadata writes it (``True`` / ``False``)."""
    words = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
    try:
        return words[text.strip().lower()]
    except KeyError:
        raise ValueError(f"expected True or False, got {text!r}") from None


def integers(text: str) -> list[int]:
    """Comma-separated integers (``999,759``), as the metadata and ``--timesteps`` write them."""
    try:
        return [int(word) for word in text.split(",")]
    except ValueError:
        raise ValueError(f"expected integers separated by commas, got {text!r}") from None


def lora_list(text: str) -> list[tuple[str, float]]:
    """``FILE|HUB_ID[:WEIGHT]`` items separated by ", " -> (file or hub id, weight) pairs; weight
    1.0 unless the text after an item's last colon is a number."""
    loras = []
    for item in text.split(", "):
        source, separator, weight = item.rpartition(":")
        try:
            loras.append((source, float(weight)) if separator and source else (item, 1.0))
        except ValueError:
            loras.append((item, 1.0))
    return loras


STAGES = ("text_encoder", "unet", "vae_decoder", "vae_encoder")
DEFAULT_DEVICE = "CPU"


@dataclass(frozen=True)
class Devices:
    """The OpenVINO device of each stage (a model folder's networks; a tiny VAE's decoder and
    encoder run where ``vae_decoder`` and ``vae_encoder`` do). Its text form is one device for
    every stage (``CPU``, ``AUTO:GPU,CPU``) or ``STAGE=DEVICE`` pairs separated by commas
    (``text_encoder=NPU,unet=GPU,vae_decoder=CPU``); a stage not named runs on CPU."""

    text_encoder: str = DEFAULT_DEVICE
    unet: str = DEFAULT_DEVICE
    vae_decoder: str = DEFAULT_DEVICE
    vae_encoder: str = DEFAULT_DEVICE

    @classmethod
    def of(cls, value: str | Mapping[str, str] | Devices) -> Devices:
        """``value`` as a device map: a ``Devices`` as it is, text as ``device_map`` reads it, a
        mapping ``{stage: device}`` (stages not named on CPU); a UsageError names a stage that
        does not exist or a device that is not text."""
        if isinstance(value, Devices):
            return value
        if isinstance(value, str):
            return device_map(value)
        if not isinstance(value, Mapping):
            raise UsageError(
                f"device must be a device name or a {{stage: device}} mapping, got {value!r}"
            )
        for stage, device in value.items():
            if stage not in STAGES:
                raise UsageError(
                    f"no stage {stage!r} to put on a device; the stages are {', '.join(STAGES)}"
                )
            if not isinstance(device, str) or not device.strip():
                raise UsageError(f"no device given for {stage} (got {device!r})")
        return cls(**{stage: device.strip() for stage, device in value.items()})

    def of_stage(self, stage: str) -> str:
        """The device ``stage`` runs on."""
        return getattr(self, stage)

    def as_dict(self) -> dict[str, str]:
        """``{stage: device}`` for every stage, in pipeline order."""
        return {stage: self.of_stage(stage) for stage in STAGES}

    @property
    def distinct(self) -> tuple[str, ...]:
        """The devices named, each once, in stage order."""
        return tuple(dict.fromkeys(self.as_dict().values()))

    @property
    def text(self) -> str:
        """The text form: the device alone when every stage runs on it, else every stage's
        ``STAGE=DEVICE`` pair (``device_map`` reads it back)."""
        if len(self.distinct) == 1:
            return self.distinct[0]
        return ",".join(f"{stage}={device}" for stage, device in self.as_dict().items())

    def __str__(self) -> str:
        return self.text


def device_map(text: str) -> Devices:
    """``--device``: one device for every stage (text without ``=``, kept as it is), or
    ``STAGE=DEVICE`` pairs separated by commas, where a device may itself hold commas
    (``unet=AUTO:GPU,CPU,vae_decoder=CPU``: an item without ``=`` continues the device before
    it). Stages not named run on CPU; a stage named twice or unknown is a UsageError."""
    if "=" not in text:
        return Devices(*(text,) * len(STAGES))
    pairs: dict[str, str] = {}
    stage = None
    for item in text.split(","):
        if not item.strip():  # a trailing or doubled comma
            continue
        if "=" in item:
            stage, _, device = (part.strip() for part in item.partition("="))
            if stage in pairs:
                raise UsageError(f"{stage} is given a device twice in {text!r}")
            pairs[stage] = device
        elif stage is None:
            raise UsageError(
                f"expected a device or STAGE=DEVICE pairs separated by commas, got {text!r}"
            )
        else:
            pairs[stage] += "," + item.strip()
    return Devices.of(pairs)


PARSERS: dict[Kind, Callable[[str], Any]] = {
    "text": str,
    "integer": integer,
    "number": number,
    "numbers": number_list,
    "flag": boolean,
    "choice": str,
    "picture": Path,
    "integers": integers,
    "loras": lora_list,
    "devices": device_map,
}


def as_text(kind: Kind, value: Any) -> Any:
    """A value as the metadata stores it: numbers and flags as they are, text as a string,
    pictures by file name, an array as "given", lists of numbers, integers and LoRAs joined, a
    device map as its text form."""
    if kind == "picture":
        return picture_name(value)
    if kind == "integers":
        return ",".join(str(int(item)) for item in value)
    if kind == "numbers":
        values = [value] if isinstance(value, numbers.Real) else value
        return ",".join(repr(float(item)) for item in values)
    if kind == "loras":
        return ", ".join(f"{source}:{weight:g}" for source, weight in value)
    if kind == "devices":
        return Devices.of(value).text
    if kind == "text":
        return str(value)  # a model folder given as a Path, too
    if kind == "array":
        return "given"  # that it was, not its numbers
    return value


def metadata_of(request: Any, prompt_index: int) -> dict[str, Any]:
    """The recorded fields of ``request`` (as resolved by the pipeline), for the image of prompt
    ``prompt_index``: one prompt (and negative prompt) of a list, fields not given or whose
    ``needs`` is missing left out."""
    recorded: dict[str, Any] = {}
    for name, field_spec in specs(type(request)).items():
        value = getattr(request, name)
        if field_spec.key is None or value is None:
            continue
        if field_spec.needs and getattr(request, field_spec.needs) is None:
            continue
        if field_spec.kind == "text" and isinstance(value, (list, tuple)):
            value = value[prompt_index]
        recorded[field_spec.key] = as_text(field_spec.kind, value)
    return recorded


def from_metadata(
    metadata: Mapping[str, str], request_type: type, load_type: type
) -> tuple[Any, dict[str, Any]]:
    """The request that ``metadata`` (as read back from a PNG: text) records, and the
    ``LoadOptions`` fields it records (model, tiny VAE, LoRAs); a UsageError naming a value that
    does not parse."""
    values: dict[str, Any] = {"prompt": ""}
    loading: dict[str, Any] = {}
    for declared, read in ((request_type, values), (load_type, loading)):
        for name, field_spec in specs(declared).items():
            if field_spec.key in metadata and field_spec.kind in PARSERS:
                text = metadata[field_spec.key]
                parse = PARSERS[field_spec.kind]
                try:
                    read[name] = (
                        [parse(item) for item in text.split(", ")]
                        if field_spec.repeatable
                        else parse(text)
                    )
                except ValueError as error:
                    raise UsageError(
                        f"the metadata's {field_spec.key} is not valid: {error}"
                    ) from None
    return request_type(**values), loading
