"""Packed trainer passes (``rl.pack``): the rows' real tokens laid end to end in dense rows give
the padded pass's log-probs, loss and every gradient, for dense/GQA, MLA and MoE models."""

import pytest
import torch

from r1lab.config import ModelConfig, RLConfig, SampleConfig
from r1lab.model.transformer import Transformer
from r1lab.recipes import rl as rl_recipe
from r1lab.rollout import pack_prefix_tree, pack_rows, pack_shared_prompts, policy_logprobs, policy_logprobs_entropy, sample
from r1lab.tokenizer import CharTokenizer

MODELS = {
    "gqa": dict(ffn="dense", n_kv_heads=1),
    "mla": dict(ffn="dense", attention="mla", kv_lora_rank=16, q_lora_rank=0, qk_nope_head_dim=8, qk_rope_head_dim=8, v_head_dim=8),
    "moe": dict(ffn="moe", n_kv_heads=2, n_routed_experts=4, top_k=2, d_expert=16, aux_loss_coef=0.01),
}


def rollout_of(kind: str, G: int = 4):
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, n_layers=2, n_heads=2, d_ff=64, max_seq_len=64, init_std=0.1, **MODELS[kind])
    model = Transformer(cfg, tok.vocab_size)
    with torch.no_grad():  # eos likely: rows end at different lengths, so the batch has padding
        model.embed.weight[tok.eos_id] *= 4
    prompts = [tok.prompt_ids(q) for q in ("1+2", "71+2*3-4", "9*9")]
    ro = sample(model, prompts, SampleConfig(max_new_tokens=24), tok.eos_id, tok.pad_id, torch.Generator().manual_seed(1), repeats=G)
    model.train()
    return model, ro, G


def test_pack_rows_places_every_real_token_once_and_fills_few_rows():
    mask = torch.tensor([[0, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 0, 0], [0, 1, 1, 0, 0, 0]], dtype=torch.bool)
    tokens = torch.arange(24).view(4, 6)
    pk = pack_rows(tokens, mask, 6, pad_id=-7)
    assert pk.ids_RW.shape == (3, 6)  # 6 + 3 + 2 + 2 = 13 tokens: [6], [3 + 2], [2] (first fit decreasing)
    real = pk.weight_RW > 0
    assert pk.weight_RW.sum() == mask.sum() and torch.equal(pk.ids_RW[real].sort().values, tokens[mask].sort().values)
    assert torch.equal(pk.ids_RW[0], tokens[1])  # the longest row first, alone
    assert pk.ids_RW[1].tolist() == [1, 2, 3, 14, 15, -7]  # then rows 0 and 2; row 3 no longer fits there
    assert pk.doc_ids_RW[1].tolist() == [0, 0, 0, 2, 2, -1]
    assert pk.positions_RW[1].tolist() == [0, 1, 2, 0, 1, 0]  # positions restart per row, as in the padded pass
    assert pk.ids_RW[2].tolist() == [19, 20, -7, -7, -7, -7]
    assert (pk.pred_M < 0).sum() == 4  # one first token per row: it has no prefix
    assert ((pk.pred_M == pk.slot_M - 1) | (pk.pred_M < 0)).all()  # otherwise read at the slot before
    wide = pack_rows(tokens, mask, 300, pad_id=0)  # wider than any model: the tail's positions stay 0
    assert wide.ids_RW.shape == (1, 300) and int(wide.positions_RW.max()) == 5
    with pytest.raises(ValueError, match="does not fit"):
        pack_rows(tokens, mask, 5, pad_id=0)


def test_shared_prompt_packing_runs_each_prompt_once():
    #          prompt  | completion (c) | padding
    tokens = torch.tensor([[9, 5, 6, 1, 2, 0], [9, 5, 6, 3, 0, 0], [0, 7, 8, 4, 4, 4], [9, 5, 6, 1, 1, 1]])
    mask = tokens != 0
    comp = torch.zeros_like(mask)
    comp[:, 3:] = True
    pk = pack_shared_prompts(tokens, mask, comp, 12, pad_id=-1)
    # rows 0, 1, 3 share the prompt 9 5 6: one copy, then their completions; row 2 on its own
    assert pk.ids_RW.tolist() == [[9, 5, 6, 1, 2, 3, 1, 1, 1, -1, -1, -1], [7, 8, 4, 4, 4, -1, -1, -1, -1, -1, -1, -1]]  # 12 real tokens, not 17
    assert pk.positions_RW[0, :9].tolist() == [0, 1, 2, 3, 4, 3, 3, 4, 5]  # each completion continues the prompt's positions
    m = pk.mask_RWW[0]
    assert m[5, :6].tolist() == [True, True, True, False, False, True]  # row 1's completion: the prompt and itself, not row 0's
    assert m[2, :3].all() and not m[2, 3:].any()  # prompt tokens see the prompt only
    assert pk.weight_RW[0, :9].tolist() == [3, 3, 3, 1, 1, 1, 1, 1, 1]  # the prompt copy stands for three rows' prompts
    assert (pk.pred_M[pk.pred_M >= 0] < pk.slot_M[pk.pred_M >= 0]).all()
    first_tokens = pk.slot_M[(pk.src_M[1] == 3) & (pk.src_M[0] != 2)]
    assert set(pk.pred_M[(pk.src_M[1] == 3) & (pk.src_M[0] != 2)].tolist()) == {2}  # every first completion token reads the prompt's last slot
    assert len(set(first_tokens.tolist())) == 3
    with pytest.raises(ValueError, match="does not fit"):
        pack_shared_prompts(tokens, mask, comp, 5, pad_id=0)


def test_prefix_tree_lays_each_prompt_once_and_completions_flat():
    #          prompt  | completion (c) | padding
    tokens = torch.tensor([[9, 5, 6, 1, 2, 0], [9, 5, 6, 3, 0, 0], [0, 7, 8, 4, 4, 4], [9, 5, 6, 1, 1, 1]])
    mask = tokens != 0
    comp = torch.zeros_like(mask)
    comp[:, 3:] = True
    pk = pack_prefix_tree(tokens, mask, comp)
    # rows 0, 1, 3 share the prompt 9 5 6: one copy; then row 2's prompt; then every row's completion
    assert pk.ids_RW.tolist() == [[9, 5, 6, 7, 8, 1, 2, 3, 4, 4, 4, 1, 1, 1]]  # 14 real tokens, not 19, no padding
    assert pk.positions_RW.tolist() == [[0, 1, 2, 0, 1, 3, 4, 3, 2, 3, 4, 3, 4, 5]]  # each completion continues its prompt's positions
    assert pk.weight_RW.tolist() == [[3, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1]]  # the prompt copy stands for three rows' prompts
    t = pk.tree
    assert (t.B, t.P, t.N, t.C) == (2, 3, 4, 3)
    M = 14  # slots: prompt 0, prompt 1 (its third slot padding), then each completion's 3
    assert t.slot_token_S.tolist() == [0, 1, 2, 3, 4, M, 5, 6, M, 7, M, M, 8, 9, 10, 11, 12, 13]
    assert torch.equal(t.slot_token_S[t.token_slot_M], torch.arange(M))  # every token's output is read back from its slot
    assert t.select_NB.argmax(-1).tolist() == [0, 0, 1, 0] and t.select_NB.sum().item() == 4
    m = t.mask_N1CS[:, 0]  # (N, C, P + C)
    assert m[2, 0].tolist() == [True, True, False, True, False, False]  # row 2: its prompt's 2 real keys, then itself
    assert m[0, 1].tolist() == [True, True, True, True, True, False]  # row 0's 2nd token: the prompt, its 1st token, itself
    assert pk.pred_M[(pk.src_M[0] == 2) & (pk.src_M[1] == 3)].tolist() == [4]  # row 2's first completion token reads its prompt's last slot
    assert ((pk.pred_M == pk.slot_M - 1) | (pk.src_M[1] == 3) | (pk.pred_M < 0)).all()
    assert pk.pred_M[(pk.src_M[0] != 2) & (pk.src_M[1] == 3)].tolist() == [2, 2, 2]  # rows 0, 1, 3: the shared prompt's last slot
    assert torch.equal(pk.ids_RW[0, pk.slot_M], tokens[pk.src_M])
    late = comp.clone()
    late[0, 2], late[0, 3] = True, False  # row 0: prompt token 1 after completion token 6
    with pytest.raises(ValueError, match="row 0: a prompt token follows a completion token"):
        pack_prefix_tree(tokens, mask, late)


def test_prefix_tree_attention_gradients_are_exact():
    """The slot gathers' hand-written backward (an inverse gather, no scatter-add) against
    finite differences, in float64, through prompts of unequal length shared by unequal groups."""
    tokens = torch.tensor([[9, 5, 6, 1, 2, 0], [9, 5, 6, 3, 0, 0], [0, 7, 8, 4, 4, 4], [9, 5, 6, 1, 1, 1], [0, 7, 8, 2, 0, 0], [9, 5, 6, 0, 0, 0]])
    mask = tokens != 0
    comp = torch.zeros_like(mask)
    comp[:, 3:] = True  # the last row's completion is empty
    pk = pack_prefix_tree(tokens, mask, comp)
    tree, M = pk.tree, pk.ids_RW.shape[1]
    assert M == int(mask.sum()) - 3 * 3 - 1 * 2  # each prompt once: 4 rows share one, 2 the other
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, M, 3, dtype=torch.float64, generator=g, requires_grad=True) for _ in range(3))
    assert torch.autograd.gradcheck(lambda q, k, v: tree.attend(q, k, v), (q, k, v))


def test_prefix_tree_pass_equals_the_explicit_mask_pass():
    """The flat prefix-tree pass computes what the packed rows with a (W, W) prefix-tree mask compute."""
    model, ro, _ = rollout_of("gqa")
    tree = pack_prefix_tree(ro.tokens, ro.attention_mask, ro.completion_mask)
    rows = pack_shared_prompts(ro.tokens, ro.attention_mask, ro.completion_mask, 3 * ro.tokens.shape[1], pad_id=0)
    got = model(tree.ids_RW, tree.positions_RW, tree=tree.tree).logits_BTV.reshape(-1, model.vocab_size)
    want = model(rows.ids_RW, rows.positions_RW, mask_BTT=rows.mask_RWW).logits_BTV.reshape(-1, model.vocab_size)
    N, T = ro.tokens.shape
    at = lambda pk, logits: torch.zeros(N, T, model.vocab_size).index_put(pk.src_M, logits[pk.slot_M])  # noqa: E731  each real token's logits, padded layout
    torch.testing.assert_close(at(tree, got), at(rows, want), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="tree"):
        model(tree.ids_RW, tree=tree.tree)  # no positions


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("share", [False, True])
def test_packed_logprobs_equal_padded(kind, share):
    model, ro, _ = rollout_of(kind)
    assert (~ro.attention_mask).any()  # there is padding to skip
    m = ro.completion_mask
    kw = dict(pack=True, completion_mask=m, share_prompt=share)
    for chunk in (0, 7):
        want, aux_want = policy_logprobs(model, ro.tokens, ro.attention_mask, 1.0, chunk)
        got, aux_got = policy_logprobs(model, ro.tokens, ro.attention_mask, 1.0, chunk, **kw)
        torch.testing.assert_close(got[m], want[m], rtol=0, atol=1e-5)
        torch.testing.assert_close(aux_got, aux_want, rtol=1e-5, atol=1e-7)  # a shared prompt weighs as its rows
        assert (got[~ro.attention_mask] == 0).all()
    _, ent_want, _ = policy_logprobs_entropy(model, ro.tokens, ro.attention_mask, 0.7)
    _, ent_got, _ = policy_logprobs_entropy(model, ro.tokens, ro.attention_mask, 0.7, **kw)
    torch.testing.assert_close(ent_got[m], ent_want[m], rtol=0, atol=1e-5)
    # The sampler's own log-probs agree with the packed trainer pass too.
    torch.testing.assert_close(got[m], ro.logprobs[m], rtol=0, atol=1e-4)


@pytest.mark.parametrize("kind", list(MODELS))
@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
@pytest.mark.parametrize("share", [False, True])
def test_packed_update_has_the_padded_loss_and_gradients(kind, entropy_coef, share):
    model, ro, G = rollout_of(kind)
    N = ro.tokens.shape[0]
    adv_N = torch.linspace(-1, 1, N)
    old_logp = ro.logprobs + 0.3 * torch.randn(ro.logprobs.shape, generator=torch.Generator().manual_seed(2)) * ro.completion_mask
    results = []
    for pack in (False, True):
        r = RLConfig(group_size=G, pack=pack, share_prompt=pack and share, entropy_coef=entropy_coef, micro_batch_size=5, sample=SampleConfig(max_new_tokens=24))
        model.zero_grad(set_to_none=True)
        stats = {k: 0.0 for k in ("clip_low", "clip_high", "kl", "ratio", "entropy", "tokens")}
        loss, _ = rl_recipe.backward_minibatch(model, ro, torch.arange(N), ro.completion_mask, old_logp, adv_N, None, None, r,
                                               rl_recipe.loss_settings(r), stats)
        results.append((loss, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}, stats))
    (loss_a, grads_a, stats_a), (loss_b, grads_b, stats_b) = results
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-5, atol=1e-7)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) == sum(1 for p in model.parameters() if p.requires_grad)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=lambda m: f"{name}: {m}")
    assert stats_a["clip_low"] + stats_a["clip_high"] > 0  # the clip is exercised, and agrees
    for key in stats_a:
        assert stats_b[key] == pytest.approx(stats_a[key], rel=1e-4, abs=1e-6)


def test_an_explicit_mask_is_for_training_passes_only():
    model, ro, _ = rollout_of("gqa")
    ids = ro.tokens[:1, :5]
    mask = torch.ones(1, 5, 5, dtype=torch.bool).tril()
    with pytest.raises(ValueError, match="mask_BTT"):
        model(ids, mask_BTT=mask)  # no positions
    with pytest.raises(ValueError, match="mask_BTT"):
        model(ids, torch.arange(5)[None], cache=model.new_cache(1), mask_BTT=mask)
    # With positions 0..4 and a causal mask it is the plain causal pass.
    torch.testing.assert_close(model(ids, torch.arange(5)[None], mask_BTT=mask).logits_BTV, model(ids).logits_BTV, rtol=0, atol=1e-5)
