"""The CLIP tokenizer gives transformers' ids, the ones diffusers feeds the text encoder."""

from __future__ import annotations

import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from tokenizers import pre_tokenizers

from lcm_lite.errors import ModelError, UsageError
from lcm_lite.models.tokenizer import CLIPTokenizer

transformers = pytest.importorskip("transformers")

REAL_VOCAB = Path(__file__).resolve().parents[3] / "shared" / "clip-vocab"
MAX_LENGTH = 77

# Stable Diffusion 1.5's tokenizer/tokenizer_config.json (special tokens as AddedToken dicts)
SD15_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": {
        "__type": "AddedToken",
        "content": "<|startoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    },
    "do_lower_case": True,
    "eos_token": {
        "__type": "AddedToken",
        "content": "<|endoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    },
    "errors": "replace",
    "model_max_length": MAX_LENGTH,
    "pad_token": "<|endoftext|>",
    "tokenizer_class": "CLIPTokenizer",
    "unk_token": {
        "__type": "AddedToken",
        "content": "<|endoftext|>",
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    },
}

# A tiny CLIP-layout vocabulary: the 256 byte symbols of GPT-2's byte-to-unicode table, the same
# with the end-of-word suffix, one token per merge, then the two special tokens.
SYNTHETIC_MERGES = [
    ("u", "n"),
    ("un", "i"),
    ("c", "o"),
    ("r", "n</w>"),
    ("uni", "co"),
    ("unico", "rn</w>"),
    ("p", "i"),
    ("pi", "n"),
    ("pin", "k</w>"),
    ("c", "a"),
    ("ca", "t</w>"),
    ("t", "h"),
    ("th", "e</w>"),
    ("Ã", "©</w>"),
    ("ca", "f"),
    ("caf", "Ã©</w>"),
    ("'", "s</w>"),
    ("w", "o"),
    ("wo", "w</w>"),
    ("!", "!</w>"),
]

ACCENTS = "Café niño über façade Ångström"
LONG_PROMPT = " ".join(["a beautiful pink unicorn standing in a field of flowers"] * 30)
PROMPTS = {
    "ascii": "a photo of a cat sitting on a red chair in the garden",
    "punctuation": "Hello, World!!! (masterpiece:1.2) [best quality] -- it's 'quoted' & done...",
    "numbers": "8k 1234567 3.14 1e-5 2024-01-01 4K UHD",
    "accents_nfc": unicodedata.normalize("NFC", ACCENTS),
    "accents_nfd": unicodedata.normalize("NFD", ACCENTS),
    "emoji": "a unicorn 🦄 under a rainbow 🌈 👍🏽",
    "cjk": "東京の夜景 서울 北京 ひらがな",
    "whitespace": "  tabs\tand\nnewlines\r\n  and   runs of\u00a0spaces ",
    "uppercase_and_contractions": "A BEAUTIFUL Pink UNICORN, isn't it? They'RE HERE, we'll see",
    "special_tokens_in_text": "x<|endoftext|>y <|startoftext|> z",
    "empty": "",
    "long": LONG_PROMPT,
}


def _write_synthetic_vocab(folder: Path) -> None:
    byte_symbols = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = [
        *byte_symbols,
        *(symbol + "</w>" for symbol in byte_symbols),
        *(left + right for left, right in SYNTHETIC_MERGES),
        "<|startoftext|>",
        "<|endoftext|>",
    ]
    _write_json(folder / "vocab.json", {token: index for index, token in enumerate(tokens)})
    merges = "".join(f"{left} {right}\n" for left, right in SYNTHETIC_MERGES)
    (folder / "merges.txt").write_text("#version: 0.2\n" + merges, encoding="utf-8")


def _write_vocab(folder: Path, kind: str) -> None:
    """vocab.json + merges.txt: the real CLIP vocabulary, or the small synthetic one."""
    if kind == "synthetic":
        _write_synthetic_vocab(folder)
        return
    if not REAL_VOCAB.is_dir():
        pytest.skip(f"the real CLIP vocabulary is not at {REAL_VOCAB}")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(REAL_VOCAB / name, folder / name)


def _write_json(path: Path, content: object) -> None:
    path.write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture(scope="module", params=["real", "synthetic"])
def vocab_folder(request, tmp_path_factory) -> Path:
    """A Stable Diffusion 1.5 ``tokenizer/`` folder without tokenizer.json."""
    folder = tmp_path_factory.mktemp(f"{request.param}-tokenizer")
    _write_vocab(folder, request.param)
    _write_json(folder / "tokenizer_config.json", SD15_TOKENIZER_CONFIG)
    return folder


@pytest.fixture(scope="module")
def ours(vocab_folder) -> CLIPTokenizer:
    return CLIPTokenizer.from_folder(vocab_folder)


@pytest.fixture(scope="module")
def theirs(vocab_folder):
    return transformers.CLIPTokenizer.from_pretrained(vocab_folder)


def _transformers_ids(tokenizer, prompts: list[str], max_length: int = MAX_LENGTH) -> np.ndarray:
    """The ids of diffusers' call: ``padding="max_length", truncation=True``."""
    encoded = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True)
    return np.array(encoded.input_ids, dtype=np.int64)


def test_known_ids_of_the_real_vocabulary(tmp_path):
    _write_vocab(tmp_path, "real")

    tokens = CLIPTokenizer.from_folder(tmp_path)(["a beautiful pink unicorn, 8k"])

    expected = [49406, 320, 1215, 3360, 15660, 267, 279, 330, 49407]
    np.testing.assert_array_equal(
        tokens.input_ids, [expected + [49407] * (MAX_LENGTH - len(expected))]
    )
    assert tokens.dropped_tokens == [0]


@pytest.mark.parametrize("prompt", PROMPTS.values(), ids=PROMPTS.keys())
@pytest.mark.parity
def test_ids_match_transformers(ours, theirs, prompt):
    tokens = ours([prompt])

    assert tokens.input_ids.dtype == np.int64
    np.testing.assert_array_equal(tokens.input_ids, _transformers_ids(theirs, [prompt]))


@pytest.mark.parity
def test_a_batch_matches_transformers_prompt_by_prompt(ours, theirs):
    prompts = list(PROMPTS.values())

    tokens = ours(prompts)

    assert tokens.input_ids.shape == (len(prompts), MAX_LENGTH)
    np.testing.assert_array_equal(tokens.input_ids, _transformers_ids(theirs, prompts))


@pytest.mark.parity
def test_dropped_tokens_count_what_truncation_removed(ours, theirs):
    prompts = list(PROMPTS.values())
    untruncated_lengths = [len(ids) for ids in theirs(prompts).input_ids]

    dropped = ours(prompts).dropped_tokens

    assert dropped == [max(length - MAX_LENGTH, 0) for length in untruncated_lengths]
    assert dropped[list(PROMPTS).index("long")] > 0


def test_long_prompt_keeps_bos_and_ends_with_eos(ours):
    ids = ours([LONG_PROMPT]).input_ids[0]

    assert ids[0] == ours([""]).input_ids[0, 0]
    assert ids[-1] == ours([""]).input_ids[0, 1]


def test_composed_and_decomposed_accents_give_the_same_ids(ours):
    tokens = ours([PROMPTS["accents_nfc"], PROMPTS["accents_nfd"]])

    np.testing.assert_array_equal(tokens.input_ids[0], tokens.input_ids[1])


def test_tokenizer_json_gives_the_same_ids_as_vocab_and_merges(ours, theirs, tmp_path):
    theirs.save_pretrained(tmp_path)
    assert (tmp_path / "tokenizer.json").is_file()
    assert not (tmp_path / "vocab.json").exists()

    from_tokenizer_json = CLIPTokenizer.from_folder(tmp_path)

    prompts = list(PROMPTS.values())
    np.testing.assert_array_equal(from_tokenizer_json(prompts).input_ids, ours(prompts).input_ids)


@pytest.mark.parametrize(
    ("config_file", "config"),
    [
        ("tokenizer_config.json", {**SD15_TOKENIZER_CONFIG, "pad_token": "!"}),
        ("special_tokens_map.json", {"pad_token": "!"}),  # overrides tokenizer_config.json
    ],
)
@pytest.mark.parity
def test_pad_token_of_the_folder_is_honoured(vocab_folder, tmp_path, config_file, config):
    # Stable Diffusion 2 pads with "!"; transformers then treats "!" as a special token
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        shutil.copy(vocab_folder / name, tmp_path / name)
    _write_json(tmp_path / config_file, config)
    prompts = ["wow!! a!b", "a beautiful pink unicorn, 8k", ""]

    tokens = CLIPTokenizer.from_folder(tmp_path)(prompts)

    exclamation_id = json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8"))["!"]
    assert tokens.input_ids[2, -1] == exclamation_id
    theirs = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    np.testing.assert_array_equal(tokens.input_ids, _transformers_ids(theirs, prompts))


@pytest.mark.parity
def test_model_max_length_comes_from_the_config(vocab_folder, tmp_path):
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(vocab_folder / name, tmp_path / name)
    _write_json(
        tmp_path / "tokenizer_config.json", {**SD15_TOKENIZER_CONFIG, "model_max_length": 16}
    )
    prompts = [LONG_PROMPT, "a cat"]

    tokenizer = CLIPTokenizer.from_folder(tmp_path)
    tokens = tokenizer(prompts)

    assert tokenizer.model_max_length == 16
    theirs = transformers.CLIPTokenizer.from_pretrained(tmp_path)
    np.testing.assert_array_equal(tokens.input_ids, _transformers_ids(theirs, prompts, 16))


def test_model_max_length_defaults_to_77_without_a_config(tmp_path):
    _write_vocab(tmp_path, "synthetic")

    assert CLIPTokenizer.from_folder(tmp_path)(["a cat"]).input_ids.shape == (1, 77)


@pytest.mark.parametrize("missing", ["vocab.json", "merges.txt"])
def test_a_missing_vocabulary_file_is_a_model_error_naming_it(tmp_path, missing):
    _write_vocab(tmp_path, "synthetic")
    (tmp_path / missing).unlink()

    with pytest.raises(ModelError, match=f"tokenizer file is missing: .*{missing}"):
        CLIPTokenizer.from_folder(tmp_path)


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("vocab.json", "{broken", "cannot read the BPE vocabulary"),
        ("tokenizer.json", '{"model": {"type": "WordPiece"}}', "does not hold a BPE vocabulary"),
        ("tokenizer_config.json", "[]", "expected a JSON object"),
        ("tokenizer_config.json", '{"model_max_length": 2}', "model_max_length must be"),
        ("special_tokens_map.json", '{"pad_token": 0}', "bad special token 0"),
        ("special_tokens_map.json", '{"pad_token": "<pad>"}', "has no pad_token '<pad>'"),
    ],
)
def test_a_broken_tokenizer_folder_is_a_model_error(tmp_path, file, content, message):
    _write_vocab(tmp_path, "synthetic")
    (tmp_path / file).write_text(content, encoding="utf-8")

    with pytest.raises(ModelError, match=message):
        CLIPTokenizer.from_folder(tmp_path)


@pytest.mark.parametrize(
    ("prompts", "message"),
    [
        ("a bare string", "prompts must be a list of strings, got str"),
        (None, "prompts must be a list of strings, got NoneType"),
        (["a cat", 42], "prompt 1 must be a string, got int"),
    ],
)
def test_prompts_that_are_not_strings_are_usage_errors(tmp_path, prompts, message):
    _write_vocab(tmp_path, "synthetic")

    with pytest.raises(UsageError, match=message):
        CLIPTokenizer.from_folder(tmp_path)(prompts)
