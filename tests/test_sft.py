"""SFT: completion-only loss, packing without attention across documents (packed == unpacked),
the R1 template, record reading and its errors, validation loss, and kill -9 resume."""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import pytest
import torch

from conftest import TINY, overrides
from r1lab.cli import main
from r1lab.config import ModelConfig, build
from r1lab.model.transformer import Transformer, document_mask, document_positions
from r1lab.recipes import sft as sft_recipe
from r1lab.sft import Sequence, masked_nll, pack, pad_batch, sft_loss
from r1lab.tasks import get_task
from r1lab.tokenizer import CharTokenizer
from r1lab.tracking import read_metrics

ARGS = overrides(TINY)


def write_chain_records(path: Path, n: int, seed: int = 0) -> Path:
    task, rng = get_task("chain"), random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            ex = task.sample(rng, "train")
            f.write(json.dumps({"question": ex.question, "answer": ex.answer, "solution": ex.solution}) + "\n")
    return path


def random_seqs(n: int, vocab: int, seed: int) -> list[Sequence]:
    g = random.Random(seed)
    out = []
    for _ in range(n):
        p, c = g.randint(2, 6), g.randint(1, 7)
        out.append(Sequence(tuple(g.randrange(1, vocab) for _ in range(p + c)), p))
    return out


def test_document_positions_and_mask_by_hand():
    docs = torch.tensor([[0, 0, 0, 1, 1, -1]])
    assert document_positions(docs).tolist() == [[0, 1, 2, 0, 1, 0]]
    m = document_mask(docs)[0].int().tolist()
    assert m[4] == [0, 0, 0, 1, 1, 0]  # second document's 2nd token: itself and its predecessor only
    assert m[2] == [1, 1, 1, 0, 0, 0]
    assert m[5] == [0, 0, 0, 0, 0, 1]  # padding sees itself


def test_completion_only_loss_prompt_tokens_carry_no_gradient():
    tok = CharTokenizer.build()
    seq = sft_recipe.tokenize(sft_recipe.Record("7+5*2", "<think>7+5=12</think><answer>24</answer>"), tok)
    assert seq.ids[: seq.n_prompt] == tuple(tok.prompt_ids("7+5*2"))  # the R1 template
    assert seq.ids[-1] == tok.eos_id
    b = pad_batch([seq], tok.pad_id)
    logits = torch.randn(1, len(seq.ids) - 1, tok.vocab_size, requires_grad=True)
    masked_nll(logits, b.ids_BT[:, 1:], b.loss_mask_BT[:, 1:]).backward()
    per_pos = logits.grad[0].abs().sum(-1)  # (T - 1,): position t predicts token t + 1
    predicts_prompt = torch.arange(len(seq.ids) - 1) + 1 < seq.n_prompt
    assert per_pos[predicts_prompt].eq(0).all() and per_pos[~predicts_prompt].gt(0).all()
    # and the loss equals the mean NLL of the completion tokens alone
    logp = torch.log_softmax(logits.detach(), -1)[0]
    targets = torch.tensor(seq.ids[1:])
    ref = -logp[torch.arange(len(targets)), targets][~predicts_prompt].mean()
    assert torch.allclose(masked_nll(logits.detach(), b.ids_BT[:, 1:], b.loss_mask_BT[:, 1:]), ref)


@pytest.mark.parametrize("variant", [{"ffn": "dense"}, {"ffn": "dense", "attention": "mla"}, {"ffn": "moe", "aux_loss_coef": 0.0},
                                     {"ffn": "dense", "mtp_depth": 1}])
def test_packed_training_equals_unpacked(variant):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64, n_routed_experts=4, top_k=2, d_expert=16, max_seq_len=32, **variant)
    model = Transformer(cfg, 50).double()
    seqs = random_seqs(7, 50, seed=1)
    packed, unpacked = pack(seqs, 32, 0), pad_batch(seqs, 0)
    assert packed.ids_BT.shape[0] < unpacked.ids_BT.shape[0]  # several documents share a row
    grads = []
    for b in (packed, unpacked):
        model.zero_grad()
        loss, extra = sft_loss(model, b, mtp=True)  # extra: the MTP module's loss on the MTP variant
        (loss + extra).backward()
        grads.append((torch.stack([loss, extra]).detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (lp, gp), (lu, gu) = grads
    assert torch.allclose(lp, lu, atol=1e-10), (lp, lu)
    if cfg.mtp_depth:
        assert lp[1] > 0 and any(n.startswith("mtp.") for n in gp)
    assert gp.keys() == gu.keys()
    for n in gp:
        assert torch.allclose(gp[n], gu[n], atol=1e-9), n
    # Plain causal attention across the packed row would differ: the mask matters.
    no_docs = type(packed)(packed.ids_BT, packed.loss_mask_BT, packed.real_BT, None)
    assert not torch.allclose(sft_loss(model, no_docs)[0], lu[0])


def test_default_forward_unchanged_by_the_document_path():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(ffn="dense", d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, d_ff=64), 40)
    ids = torch.randint(0, 40, (2, 9))
    one_doc = model(ids, doc_ids_BT=torch.zeros_like(ids)).logits_BTV
    assert torch.allclose(model(ids).logits_BTV, one_doc, atol=1e-6)


def test_records_from_jsonl_csv_and_parquet(tmp_path):
    tok = CharTokenizer.build()
    (tmp_path / "a.jsonl").write_text('{"prompt": "1+1", "completion": "<think></think><answer>2</answer>"}\n\n'
                                      '{"question": "2+2", "answer": " 4", "solution": "2+2=4", "extra": 1}\n')
    recs = sft_recipe.read_records(f"jsonl:{tmp_path / 'a.jsonl'}", tok)
    assert recs == [sft_recipe.Record("1+1", "<think></think><answer>2</answer>"), sft_recipe.Record("2+2", "<think>2+2=4</think><answer>4</answer>")]
    (tmp_path / "b.csv").write_text("prompt,completion\n1+1,<think></think><answer>2</answer>\n")
    assert sft_recipe.read_records(str(tmp_path / "b.csv"), tok) == recs[:1]
    import datasets

    datasets.Dataset.from_list([{"question": "2+2", "answer": "4", "solution": "2+2=4"}]).to_parquet(str(tmp_path / "c.parquet"))
    assert sft_recipe.read_records(str(tmp_path / "c.parquet"), tok) == recs[1:]


def test_malformed_record_names_file_and_line_and_exits_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "1+1", "completion": "x"}\n{"prompt": "2+2"}\n')
    out = tmp_path / "run"
    assert main(["sft", "--out", str(out), "--sft.data", f"jsonl:{bad}", *ARGS]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{bad}:2: 'completion' must be a non-empty string (missing)" in err
    assert not out.exists()  # refused before a run folder was made
    (tmp_path / "nojson.jsonl").write_text("{not json\n")
    assert main(["sft", "--out", str(out), "--sft.data", f"jsonl:{tmp_path / 'nojson.jsonl'}", *ARGS]) == 2
    assert "nojson.jsonl:1: not valid JSON" in capsys.readouterr().err


def test_no_usable_record_refuses_to_start(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    assert main(["sft", "--out", str(tmp_path / "a"), "--sft.data", f"jsonl:{empty}", *ARGS]) == 2
    assert "holds no record" in capsys.readouterr().err
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "1", "completion": "x" * 500}) + "\n")
    assert main(["sft", "--out", str(tmp_path / "b"), "--sft.data", f"jsonl:{long}", *ARGS]) == 2
    assert "no usable record" in capsys.readouterr().err
    assert not (tmp_path / "b" / "checkpoints").exists()


def test_heldout_split_keeps_prompts_apart_and_is_order_free():
    recs = [sft_recipe.Record(f"q{i % 10}", f"c{i}") for i in range(40)]
    train, val = sft_recipe.split_heldout(recs, 0.2)
    assert {recs[i].prompt for i in train}.isdisjoint({recs[i].prompt for i in val})
    assert len({recs[i].prompt for i in val}) == 2 and len(train) + len(val) == 40
    _, val_rev = sft_recipe.split_heldout(recs[::-1], 0.2)
    assert {recs[::-1][i].prompt for i in val_rev} == {recs[i].prompt for i in val}


def test_sft_lowers_the_loss_and_logs_validation(tmp_path, base_run):
    data = write_chain_records(tmp_path / "d.jsonl", 80)
    out = tmp_path / "sft"
    argv = ["sft", "--init", str(base_run), "--out", str(out), "--sft.data", f"jsonl:{data}", *ARGS,
            "--sft.steps", "12", "--sft.eval_every", "6", "--sft.lr", "3e-3", "--sft.val_fraction", "0.1"]
    assert main(argv) == 0
    rows = read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows if "sft/val_loss" in r] == [6, 12]
    assert rows[-1]["sft/loss"] < rows[0]["sft/loss"]


def test_sft_from_a_fresh_model_without_init(tmp_path):
    data = write_chain_records(tmp_path / "d.jsonl", 20)
    assert main(["sft", "--out", str(tmp_path / "fresh"), "--sft.data", str(data), *ARGS, "--sft.steps", "2", "--model.ffn", "dense"]) == 0
    assert (tmp_path / "fresh" / "checkpoints" / "step_2").is_dir()


def test_sft_run_function_returns_last_checkpoint(tmp_path, base_run):
    data = write_chain_records(tmp_path / "d.jsonl", 20)
    cfg = build({**TINY, "sft": {"data": f"jsonl:{data}", "steps": 3, "packing": False}})
    last = sft_recipe.run(cfg, tmp_path / "r", base_run)
    assert last == tmp_path / "r" / "checkpoints" / "step_3"


@pytest.mark.slow  # ~50 s: five r1lab processes
def test_sft_killed_at_random_steps_resumes_bit_identical(tmp_path, base_run):
    from test_resume import KILL_POINTS, survive_kills

    data = write_chain_records(tmp_path / "d.jsonl", 60)
    steps = max(12, 4 * KILL_POINTS)
    argv = ["--init", str(base_run), "--sft.data", f"jsonl:{data}", *ARGS, "--sft.steps", str(steps), "--sft.eval_every", "3",
            "--save_every", "2", "--keep_checkpoints", "1000", "--sft.batch_size", "2"]
    reference = tmp_path / "reference"
    assert main(["sft", "--out", str(reference), *argv]) == 0
    results = survive_kills(["sft", "--out", str(tmp_path / "run"), *argv], tmp_path / "run", reference, steps,
                            [signal.SIGKILL] * KILL_POINTS, tmp_path)
    assert all(results), results
