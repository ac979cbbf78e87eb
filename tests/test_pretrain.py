"""The pretraining corpus: packed whole documents, train split only, the requested style mix."""

import random

import pytest

from r1lab.recipes.pretrain import batch
from r1lab.tasks import Example, get_task
from r1lab.tokenizer import BOS, EOS, CharTokenizer

TOK = CharTokenizer.build()


def documents(ids) -> list[str]:
    docs = []
    for row in ids.tolist():
        text = TOK.decode([i for i in row if i != TOK.pad_id])
        assert text.startswith(BOS) and text.endswith(EOS)  # rows hold whole documents only
        docs += [BOS + d + EOS for d in text[len(BOS) : -len(EOS)].split(EOS + BOS)]
    return docs


@pytest.mark.parametrize("name", ["chain", "hops"])
def test_corpus_is_packed_from_the_train_split_only(name):
    task = get_task(name)
    test_questions = {ex.question for ex in task.examples("test", 300, seed=0)}
    ids, mask = batch(TOK, task, random.Random(0), rows=40, worked_fraction=0.3, seq_len=128)
    assert ids.shape == (40, 128) and mask.float().mean() > 0.75
    docs = documents(ids)
    questions = [d.split("User: ")[1].split("\n")[0] for d in docs]
    assert len(questions) > 60
    # The split is a function of the task's canonical key, which may use the answer (chain's does).
    answers = [d.split("<answer>")[1].split("</answer>")[0] for d in docs]
    assert all(task.split_of(Example(question=q, answer=a)) == "train" for q, a in zip(questions, answers))
    assert not test_questions & set(questions)


@pytest.mark.parametrize("fraction,expected", [(0.0, 0.0), (1.0, 1.0), (0.3, 0.3)])
def test_worked_fraction_sets_the_share_of_worked_solutions(fraction, expected):
    ids, _ = batch(TOK, get_task("chain"), random.Random(1), rows=60, worked_fraction=fraction, seq_len=128)
    docs = documents(ids)
    worked = sum("<think></think>" not in d for d in docs) / len(docs)
    assert worked == pytest.approx(expected, abs=0.08)
