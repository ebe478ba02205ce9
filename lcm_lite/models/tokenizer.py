"""CLIP's tokenizer: prompts to the text encoder's ``input_ids``, as diffusers asks transformers.

diffusers calls ``CLIPTokenizer(prompts, padding="max_length", max_length=77, truncation=True)``;
this module builds the same ``tokenizers`` pipeline as transformers 5's ``CLIPTokenizer``: NFC,
whitespace runs collapsed to one space, lower case; CLIP's split regex, then byte-level BPE with the
end-of-word suffix ``</w>``; ``<|startoftext|> ... <|endoftext|>`` around at most
``model_max_length - 2`` tokens, padded with the folder's pad token.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, normalizers, pre_tokenizers, processors
from tokenizers.models import BPE

from lcm_lite.errors import ModelError, UsageError
from lcm_lite.models.configs import read_json_object

DEFAULT_MODEL_MAX_LENGTH = 77
END_OF_WORD_SUFFIX = "</w>"
# transformers' CLIP pattern: the two special tokens, contractions, letter runs, single digits,
# runs of other non-space characters.
CLIP_SPLIT_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d"
    r"|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)
DEFAULT_SPECIAL_TOKENS = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
}


@dataclass(frozen=True)
class TokenizedPrompts:
    """``input_ids``: int64 ``(batch, model_max_length)``, padded with the pad token;
    ``dropped_tokens``: per prompt, how many tokens truncation removed."""

    input_ids: np.ndarray
    dropped_tokens: list[int]


class CLIPTokenizer:
    """The CLIP tokenizer of a model's ``tokenizer/`` folder."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        model_max_length: int,
        pad_token_id: int,
        bos_token_id: int,
        eos_token_id: int,
    ) -> None:
        self._tokenizer = tokenizer
        self.model_max_length = model_max_length
        self.pad_token_id = pad_token_id
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        # room for the prompt's own tokens once bos and eos are added
        self._room = model_max_length - tokenizer.post_processor.num_special_tokens_to_add(False)

    @classmethod
    def from_folder(cls, folder: Path) -> CLIPTokenizer:
        """Read ``tokenizer.json`` if present (its BPE vocabulary and merges, as transformers 5
        does), else ``vocab.json`` + ``merges.txt``; special tokens and ``model_max_length`` from
        ``tokenizer_config.json`` and ``special_tokens_map.json`` (the latter wins), with CLIP's
        defaults."""
        folder = Path(folder)
        config = _optional_json(folder / "tokenizer_config.json")
        special_tokens = {**config, **_optional_json(folder / "special_tokens_map.json")}
        tokens = {
            key: _token_content(special_tokens.get(key), default, folder)
            for key, default in DEFAULT_SPECIAL_TOKENS.items()
        }
        model_max_length = config.get("model_max_length", DEFAULT_MODEL_MAX_LENGTH)
        if type(model_max_length) is not int or model_max_length < 3:
            raise ModelError(
                f"{folder / 'tokenizer_config.json'}: model_max_length must be an "
                f"integer of at least 3, got {model_max_length!r}"
            )
        vocab, merges = _read_bpe(folder)
        for key, token in tokens.items():
            if token not in vocab:
                raise ModelError(f"the vocabulary in {folder} has no {key} {token!r}")
        return cls(
            _clip_tokenizer(vocab, merges, tokens),
            model_max_length,
            *(vocab[tokens[key]] for key in ("pad_token", "bos_token", "eos_token")),
        )

    def __call__(self, prompts: Sequence[str]) -> TokenizedPrompts:
        """Tokenize ``prompts``: truncated to ``model_max_length`` with bos/eos, then padded."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise UsageError(f"prompts must be a list of strings, got {type(prompts).__name__}")
        for index, prompt in enumerate(prompts):
            if not isinstance(prompt, str):
                raise UsageError(f"prompt {index} must be a string, got {type(prompt).__name__}")
        input_ids = np.full((len(prompts), self.model_max_length), self.pad_token_id, np.int64)
        dropped_tokens = []
        encodings = self._tokenizer.encode_batch(list(prompts), add_special_tokens=False)
        for row, encoding in enumerate(encodings):
            dropped_tokens.append(max(len(encoding.ids) - self._room, 0))
            encoding.truncate(self._room)
            ids = self._tokenizer.post_process(encoding).ids  # adds bos and eos
            input_ids[row, : len(ids)] = ids
        return TokenizedPrompts(input_ids, dropped_tokens)

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's tokens, untruncated, without start and end tokens (as transformers'
        ``tokenizer(text).input_ids[1:-1]``)."""
        encodings = self._tokenizer.encode_batch(list(texts), add_special_tokens=False)
        return [encoding.ids for encoding in encodings]


def _clip_tokenizer(
    vocab: dict[str, int], merges: list[tuple[str, str]], tokens: dict[str, str]
) -> Tokenizer:
    """transformers 5's ``CLIPTokenizer`` backend: normaliser, pre-tokeniser, BPE model,
    post-processor and special tokens."""
    tokenizer = Tokenizer(
        BPE(
            vocab,
            merges,
            unk_token=tokens["unk_token"],
            continuing_subword_prefix="",
            end_of_word_suffix=END_OF_WORD_SUFFIX,
            fuse_unk=False,
        )
    )
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_SPLIT_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tokenizer.post_processor = processors.RobertaProcessing(
        (tokens["eos_token"], vocab[tokens["eos_token"]]),
        (tokens["bos_token"], vocab[tokens["bos_token"]]),
        trim_offsets=False,
        add_prefix_space=False,
    )
    # transformers registers the special tokens, so a prompt's own "<|endoftext|>" (or the pad
    # token, "!" for some models) is that token, not text
    tokenizer.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False)
            for token in dict.fromkeys(tokens.values())
        ]
    )
    return tokenizer


def _optional_json(path: Path) -> dict:
    """The JSON object in ``path``; ``{}`` if there is no such file."""
    return read_json_object(path) if path.is_file() else {}


def _token_content(value: object, default: str, folder: Path) -> str:
    """A special token as the config files write it: a string, or an AddedToken dict."""
    if value is None:
        return default
    if isinstance(value, dict):
        value = value.get("content")
    if not isinstance(value, str):
        raise ModelError(f"bad special token {value!r} in the tokenizer config of {folder}")
    return value


def _read_bpe(folder: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The BPE vocabulary and merges, from ``tokenizer.json`` or ``vocab.json`` + ``merges.txt``."""
    if (folder / "tokenizer.json").is_file():
        model = read_json_object(folder / "tokenizer.json").get("model")
        if not (
            isinstance(model, dict)
            and model.get("type") == "BPE"
            and isinstance(model.get("vocab"), dict)
            and isinstance(model.get("merges"), list)
        ):
            raise ModelError(f"{folder / 'tokenizer.json'} does not hold a BPE vocabulary")
        merges = [
            tuple(merge.split(" ")) if isinstance(merge, str) else tuple(merge)
            for merge in model["merges"]
        ]
        return model["vocab"], merges
    for name in ("vocab.json", "merges.txt"):
        if not (folder / name).is_file():
            raise ModelError(f"tokenizer file is missing: {folder / name}")
    try:
        return BPE.read_file(str(folder / "vocab.json"), str(folder / "merges.txt"))
    except Exception as error:  # the tokenizers library raises plain Exception on a bad file
        raise ModelError(f"cannot read the BPE vocabulary in {folder}: {error}") from None
