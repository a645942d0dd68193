"""Word-level tokenizer for task instructions, built with the ``tokenizers`` library.

Token ids: ``[PAD]`` is 0, ``[UNK]`` is 1, and the suite's vocabulary words follow in sorted
order. Text is lowercased and split on whitespace and punctuation. Every encoding is padded
or truncated to a fixed length, so a batch is a dense (B, max_length) array.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, normalizers, pre_tokenizers
from tokenizers.models import WordLevel

PAD_TOKEN = "[PAD]"
UNK_TOKEN = "[UNK]"
PAD_TOKEN_ID = 0
UNK_TOKEN_ID = 1
TOKENIZER_FILE = "tokenizer.json"
DEFAULT_MAX_LENGTH = 16


def suite_vocabulary() -> list[str]:
    """Return every word that an instruction of the tabletop suite can contain."""
    from vla_distill.sim.tabletop.instructions import vocabulary

    return vocabulary()


def build_instruction_tokenizer(
    words: list[str] | None = None, max_length: int = DEFAULT_MAX_LENGTH
) -> Tokenizer:
    """Build a WordLevel tokenizer over ``words`` (default: the suite vocabulary).

    Words outside the vocabulary encode to ``[UNK]``.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    words = suite_vocabulary() if words is None else words
    vocab = {PAD_TOKEN: PAD_TOKEN_ID, UNK_TOKEN: UNK_TOKEN_ID}
    for word in sorted({word.lower() for word in words}):
        if word not in vocab:
            vocab[word] = len(vocab)

    tokenizer = Tokenizer(WordLevel(vocab=vocab, unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Lowercase()
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_padding(pad_id=PAD_TOKEN_ID, pad_token=PAD_TOKEN, length=max_length)
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def save_instruction_tokenizer(tokenizer: Tokenizer, folder: str | Path) -> Path:
    """Write ``tokenizer.json`` into ``folder`` and return its path."""
    path = Path(folder) / TOKENIZER_FILE
    tokenizer.save(str(path))
    return path


def load_instruction_tokenizer(folder: str | Path) -> Tokenizer:
    """Load ``tokenizer.json`` from a checkpoint folder, without network access."""
    path = Path(folder) / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"instruction tokenizer not found: {path}; every checkpoint folder needs the "
            f"{TOKENIZER_FILE} written by save_policy"
        )
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises a bare Exception on invalid JSON
        raise ValueError(f"invalid instruction tokenizer file {path}: {error}") from error
    _check_fixed_length(tokenizer, path)
    return tokenizer


def _check_fixed_length(tokenizer: Tokenizer, path: Path) -> None:
    padding = tokenizer.padding
    truncation = tokenizer.truncation
    if padding is None or padding.get("length") is None or truncation is None:
        raise ValueError(
            f"instruction tokenizer {path} must pad and truncate to a fixed length; "
            "rebuild it with build_instruction_tokenizer"
        )
    if padding["length"] != truncation["max_length"]:
        raise ValueError(
            f"instruction tokenizer {path} pads to {padding['length']} tokens but truncates "
            f"to {truncation['max_length']}; both must be equal"
        )


def tokenizer_max_length(tokenizer: Tokenizer) -> int:
    """Return the fixed number of tokens of every encoding."""
    return int(tokenizer.padding["length"])
