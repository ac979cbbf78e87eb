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
