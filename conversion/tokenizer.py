"""The ``tokenizer/`` folder of a model: CLIP's Hugging Face files and its OpenVINO form."""

from __future__ import annotations

import json
from pathlib import Path

import openvino as ov
import openvino_tokenizers
from transformers import CLIPTokenizer


def save_clip_tokenizer(tokenizer: CLIPTokenizer, directory: Path) -> None:
    """Write the files of an SD1.5 ``tokenizer/`` folder, as the hub repositories ship them.

    ``vocab.json`` and ``merges.txt`` (the BPE model), ``tokenizer_config.json`` and
    ``special_tokens_map.json``; transformers also writes its ``tokenizer.json``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(directory)
    tokenizer.backend_tokenizer.model.save(str(directory))
    special_tokens = json.dumps(tokenizer.special_tokens_map, indent=2)
    (directory / "special_tokens_map.json").write_text(special_tokens + "\n", encoding="utf-8")


def openvino_tokenizer_models(tokenizer: CLIPTokenizer) -> dict[str, ov.Model]:
    """``openvino_tokenizer.xml`` and ``openvino_detokenizer.xml``, by file name.

    As optimum-intel exports them, for ``openvino_genai``; truncation to ``model_max_length``
    (77) is on, as in diffusers' ``tokenizer(..., truncation=True)``.
    """
    encoder, decoder = openvino_tokenizers.convert_tokenizer(
        tokenizer, with_detokenizer=True, truncation=True
    )
    return {"openvino_tokenizer.xml": encoder, "openvino_detokenizer.xml": decoder}
