"""The command line that makes an image again, from the settings its PNG stores.

Derived from the declarations: the metadata is read back into a ``Request`` and ``LoadOptions``
(``request.from_metadata``), and each recorded field becomes its option (``Spec.flag``) with its
value as the metadata wrote it. ``prompt`` is the positional argument; ``index`` (which image of
the call) is not an option, nor ``timesteps`` (what ran: ``steps``, ``original_inference_steps``
and ``strength`` make it again, or the ``custom_timesteps`` a caller gave).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping

from lcm_lite.errors import UsageError
from lcm_lite.fields import as_text, specs
from lcm_lite.request import LoadOptions, Request, from_metadata


def remake_argv(
    metadata: Mapping[str, str], prog: str = "lcm-lite", declared: type = Request
) -> list[str]:
    """The words of the command that generates the image of ``metadata`` again: the call it
    came from (with ``num_images`` > 1, its image number ``index`` among them). ``declared``:
    the request's dataclass."""
    for field_spec in specs(declared).values():
        if field_spec.kind == "array" and field_spec.key in metadata:
            raise UsageError(
                f"the image was made from {field_spec.key} given in Python, which the metadata "
                "does not hold"
            )
    request, loading = from_metadata(metadata, declared)
    argv = [prog, "generate"]
    for fields_of, values in ((declared, vars(request)), (LoadOptions, loading)):
        for name, field_spec in specs(fields_of).items():
            if not field_spec.flag or field_spec.key not in metadata:
                continue
            if field_spec.needs and specs(fields_of)[field_spec.needs].key not in metadata:
                continue  # as the metadata records it: not without what it needs
            if field_spec.kind == "flag":  # --prompt-weighting, or nothing (the default)
                argv += [field_spec.flag] if values[name] else []
                continue
            if field_spec.kind == "loras":  # repeatable: --lora A:1 --lora B:0.5
                words = [as_text("loras", [lora]) for lora in values[name]]
            elif field_spec.repeatable:  # --control-image A --control-image B
                words = [str(as_text(field_spec.kind, item)) for item in values[name]]
            else:
                words = [str(as_text(field_spec.kind, values[name]))]
            argv += [f"{field_spec.flag}={word}" for word in words]  # "=": a value may start with -
    argv += ["--", request.prompt] if request.prompt.startswith("-") else [request.prompt]
    return argv


def remake_command(metadata: Mapping[str, str], prog: str = "lcm-lite") -> str:
    """``remake_argv`` as a shell command line."""
    return shlex.join(remake_argv(metadata, prog))
