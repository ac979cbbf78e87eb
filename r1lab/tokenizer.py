"""Tokenizers behind one small interface, and the R1 prompt template.

Two implementations of ``Tokenizer`` (encode, decode, R1-template prompt ids, eos/pad ids, vocab
size), both over a Hugging Face ``tokenizers.Tokenizer`` saved as a standard ``tokenizer.json``:
``CharTokenizer`` for models trained from scratch, and ``JsonTokenizer`` for any other
``tokenizer.json`` (the BPE of an imported Llama or Qwen2), whose bos/eos/pad tokens come from
the ``tokenizer_config.json`` beside it. ``load(folder)`` reads a folder's ``tokenizer.json`` and
picks the implementation from its content, so a run folder records which tokenizer it used and no
recipe names a class. The R1 tags are special tokens of the character tokenizer; a BPE tokenizer
without such tokens encodes them as plain text, and answers are extracted from decoded text
either way.

Tiny models trained from scratch learn arithmetic far better one character at a time than over
BPE merges that glue digits together unpredictably, so the vocabulary is printable ASCII plus
newline and tab, plus the special tokens of the DeepSeek-R1 template as single tokens. The
tokenizer is saved as a standard ``tokenizer.json``, loadable by any ``tokenizers`` client.

Template (DeepSeek-R1, arXiv:2501.12948, Table 1), shortened for tiny models whose every prompt
character costs context: the instruction sentence is dropped and the roles kept::

    <bos>User: {question}
    Assistant:<think>...</think><answer>...</answer><eos>
"""

from __future__ import annotations

import json
import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
THINK, THINK_END, ANSWER, ANSWER_END = "<think>", "</think>", "<answer>", "</answer>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, THINK, THINK_END, ANSWER, ANSWER_END]
CHARS = [c for c in string.printable if c not in "\r\x0b\x0c"]  # printable ASCII + space, \t, \n

PROMPT_TEMPLATE = "User: {question}\nAssistant:"


TOKENIZER_FILE = "tokenizer.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
"Hugging Face's file of special tokens beside tokenizer.json (AutoTokenizer reads it too)"


class TokenizerError(ValueError):
    """A tokenizer file that cannot be used; the message names the file and the field."""


class BaseTokenizer:
    """The interface every recipe uses. ``bos_id`` may be None (Qwen2 has no bos token)."""

    tok: Tokenizer
    bos_id: int | None
    eos_id: int
    pad_id: int
    vocab_size: int  # highest token id + 1, added tokens included

    def special_tokens(self) -> dict[str, str | None]:
        """bos/eos/pad token strings, as ``tokenizer_config.json`` stores them."""
        text = lambda i: None if i is None else self.tok.id_to_token(i)  # noqa: E731
        return {"bos_token": text(self.bos_id), "eos_token": text(self.eos_id), "pad_token": text(self.pad_id)}

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        return self.tok.decode(ids, skip_special_tokens=skip_special)

    def decode_completion(self, ids: list[int]) -> str:
        """Text of a sampled completion: stops at the first eos, drops pad."""
        out = []
        for i in ids:
            if i == self.eos_id:
                break
            if i != self.pad_id:
                out.append(i)
        return self.decode(out)

    def prompt_ids(self, question: str) -> list[int]:
        """Token ids of the R1-template prompt for ``question``, starting with bos if there is one."""
        return ([self.bos_id] if self.bos_id is not None else []) + self.encode(PROMPT_TEMPLATE.format(question=question))

    def completion_text(self, solution: str, answer: str) -> str:
        """The target completion for a worked (non-empty ``solution``) or direct answer."""
        return f"{THINK}{solution}{THINK_END}{ANSWER}{answer}{ANSWER_END}"

    def save_folder(self, folder: str | Path) -> None:
        """Write ``tokenizer.json`` and ``tokenizer_config.json`` (which AutoTokenizer also reads)."""
        folder = Path(folder)
        self.tok.save(str(folder / TOKENIZER_FILE))
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **self.special_tokens(), "clean_up_tokenization_spaces": False}
        (folder / TOKENIZER_CONFIG_FILE).write_text(json.dumps(config, indent=2), encoding="utf-8")


class JsonTokenizer(BaseTokenizer):
    """Any ``tokenizer.json`` (BPE, Unigram, ...) with its bos/eos/pad tokens given by name."""

    def __init__(self, tok: Tokenizer, eos: str, bos: str | None = None, pad: str | None = None, source: str = TOKENIZER_FILE):
        self.tok = tok
        ids = {}
        for field_name, token in (("eos_token", eos), ("bos_token", bos), ("pad_token", pad)):
            if token is not None and tok.token_to_id(token) is None:
                raise TokenizerError(f"{source}: {field_name} {token!r} is not in the vocabulary")
            ids[field_name] = None if token is None else tok.token_to_id(token)
        self.eos_id, self.bos_id = ids["eos_token"], ids["bos_token"]
        self.pad_id = ids["pad_token"] if ids["pad_token"] is not None else self.eos_id  # eos pads when there is no pad token
        self.vocab_size = tok.get_vocab_size(with_added_tokens=True)


class CharTokenizer(BaseTokenizer):
    """Wraps a ``tokenizers.Tokenizer``: special tokens are atomic, every other character is one
    token, unknown characters become ``<unk>``. ``decode(encode(s)) == s`` for any string made of
    ``CHARS`` and special tokens."""

    def __init__(self, tok: Tokenizer):
        self.tok = tok
        self.pad_id, self.bos_id, self.eos_id = (tok.token_to_id(t) for t in (PAD, BOS, EOS))
        self.vocab_size = tok.get_vocab_size()

    @classmethod
    def build(cls) -> CharTokenizer:
        vocab = {t: i for i, t in enumerate(SPECIAL_TOKENS + CHARS)}
        tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
        tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
        tok.decoder = decoders.Fuse()  # join characters back without separators
        tok.add_special_tokens(SPECIAL_TOKENS)
        return cls(tok)

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        return cls(Tokenizer.from_file(str(path)))

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))


def _special(value: object) -> str | None:
    """A special token as tokenizer_config.json stores it: a string, or {"content": ...}."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def load(folder: str | Path) -> BaseTokenizer:
    """The tokenizer of a run folder, checkpoint or Hugging Face model folder: its
    ``tokenizer.json``, the character tokenizer when that file holds exactly its vocabulary,
    else a ``JsonTokenizer`` whose special tokens come from ``tokenizer_config.json`` (or the
    folder's ``config.json`` ids). Raises ``TokenizerError`` naming the file and field."""
    folder = Path(folder)
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerError(f"{folder}: no {TOKENIZER_FILE} (r1lab reads tokenizers in that format; "
                             "AutoTokenizer.from_pretrained(...).save_pretrained(...) writes one)")
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as err:  # the Rust library raises plain Exceptions
        raise TokenizerError(f"{path}: not a readable tokenizer ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    if tok.get_vocab(with_added_tokens=True) == CharTokenizer.build().tok.get_vocab(with_added_tokens=True):
        return CharTokenizer(tok)
    special: dict[str, str | None] = {}
    cfg_path = folder / TOKENIZER_CONFIG_FILE
    if cfg_path.is_file():
        try:
            data = json.loads(cfg_path.read_text(encoding="utf-8"))
        except (ValueError, OSError) as err:
            raise TokenizerError(f"{cfg_path}: not valid JSON ({err})") from None
        special = {k: _special(data.get(k)) for k in ("bos_token", "eos_token", "pad_token")}
        if data.get("add_bos_token") is False:
            special["bos_token"] = None
    model_cfg = folder / "config.json"
    if special.get("eos_token") is None and model_cfg.is_file():  # fall back on the model's ids
        try:
            ids = json.loads(model_cfg.read_text(encoding="utf-8"))
        except (ValueError, OSError):
            ids = {}
        for key in ("eos_token_id", "bos_token_id"):
            value = ids.get(key)
            value = value[0] if isinstance(value, list) and value else value
            if isinstance(value, int) and special.get(key[:-3]) is None:
                special[key[:-3]] = tok.id_to_token(value)
    if special.get("eos_token") is None:
        raise TokenizerError(f"{cfg_path}: field eos_token is missing (and {model_cfg.name} has no eos_token_id): r1lab needs an end-of-sequence token")
    return JsonTokenizer(tok, eos=special["eos_token"], bos=special.get("bos_token"), pad=special.get("pad_token"), source=str(cfg_path))
