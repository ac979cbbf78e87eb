"""Character-level tokenizer (built with Hugging Face ``tokenizers``) and the R1 prompt template.

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

import string
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
THINK, THINK_END, ANSWER, ANSWER_END = "<think>", "</think>", "<answer>", "</answer>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, THINK, THINK_END, ANSWER, ANSWER_END]
CHARS = [c for c in string.printable if c not in "\r\x0b\x0c"]  # printable ASCII + space, \t, \n

PROMPT_TEMPLATE = "User: {question}\nAssistant:"


class CharTokenizer:
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
        """Token ids of the R1-template prompt for ``question``, starting with bos."""
        return [self.bos_id] + self.encode(PROMPT_TEMPLATE.format(question=question))

    def completion_text(self, solution: str, answer: str) -> str:
        """The target completion for a worked (non-empty ``solution``) or direct answer."""
        return f"{THINK}{solution}{THINK_END}{ANSWER}{answer}{ANSWER_END}"
