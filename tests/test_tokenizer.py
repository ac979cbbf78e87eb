from hypothesis import given, strategies as st

from r1lab.tokenizer import CHARS, SPECIAL_TOKENS, CharTokenizer

TOK = CharTokenizer.build()


@given(st.lists(st.sampled_from(CHARS + SPECIAL_TOKENS), max_size=60).map("".join))
def test_round_trip_is_exact(text):
    assert TOK.decode(TOK.encode(text)) == text


def test_special_tokens_are_single_ids_and_characters_are_one_token_each():
    ids = TOK.encode("<think>12</think><answer> 3</answer>")
    assert len(ids) == 1 + 2 + 1 + 1 + 2 + 1
    assert len(set(TOK.encode("".join(SPECIAL_TOKENS)))) == len(SPECIAL_TOKENS)
    assert TOK.encode("<thin") == [TOK.tok.token_to_id(c) for c in "<thin"]  # not a special token


def test_unknown_characters_become_unk_and_save_load_is_identical(tmp_path):
    assert TOK.encode("é") == [TOK.tok.token_to_id("<unk>")]
    TOK.save(tmp_path / "tokenizer.json")
    loaded = CharTokenizer.load(tmp_path / "tokenizer.json")
    text = "User: 7+5*2-3\nAssistant:<think>7+5=12</think>"
    assert loaded.encode(text) == TOK.encode(text) and loaded.vocab_size == TOK.vocab_size


def test_prompt_and_completion_follow_the_r1_template():
    assert TOK.decode(TOK.prompt_ids("1+2")) == "<bos>User: 1+2\nAssistant:"
    assert TOK.completion_text("1+2=3", "3") == "<think>1+2=3</think><answer>3</answer>"
    ids = TOK.encode("<answer>3</answer>") + [TOK.eos_id] + TOK.encode("junk")
    assert TOK.decode_completion(ids) == "<answer>3</answer>"


def test_load_picks_the_implementation_from_the_files_and_names_a_missing_eos(tmp_path):
    import json
    import re

    import pytest
    from tokenizers import Tokenizer, models

    from r1lab.tokenizer import JsonTokenizer, TokenizerError, load

    (tmp_path / "char").mkdir()
    TOK.save_folder(tmp_path / "char")
    assert isinstance(load(tmp_path / "char"), CharTokenizer)
    other = tmp_path / "other"
    other.mkdir()
    Tokenizer(models.WordLevel({"a": 0, "b": 1, "</s>": 2, "<s>": 3}, unk_token="a")).save(str(other / "tokenizer.json"))
    with pytest.raises(TokenizerError, match=r"tokenizer_config.json: field eos_token is missing"):
        load(other)
    (other / "tokenizer_config.json").write_text(json.dumps({"eos_token": {"content": "</s>"}, "bos_token": "<s>"}))
    tok = load(other)
    assert isinstance(tok, JsonTokenizer) and (tok.eos_id, tok.bos_id, tok.pad_id) == (2, 3, 2)  # eos pads without a pad token
    (other / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<|im_end|>"}))
    with pytest.raises(TokenizerError, match=re.escape("eos_token '<|im_end|>' is not in the vocabulary")):
        load(other)
    with pytest.raises(TokenizerError, match="no tokenizer.json"):
        load(tmp_path)
