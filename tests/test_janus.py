"""Janus in miniature (r1lab.janus, r1lab janus): the scene detector and the digit classifier on
hand-made images, disjoint splits, the VQ tokenizer's maths and round trip, classifier-free
guidance, the two paths sharing one transformer, and the command end to end."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from conftest import TINY, overrides
from r1lab.cli import main
from r1lab.config import Config, ModelConfig
from r1lab.janus import digits, scenes, vq
from r1lab.janus import sequence as S
from r1lab.janus.model import JanusModel, cfg_logits
from r1lab.model.transformer import Transformer
from r1lab.tokenizer import PROMPT_TEMPLATE, CharTokenizer

JANUS_TINY = {"vq_steps": 6, "vq_batch_size": 8, "vq_channels": 8, "vq_codebook": 16, "enc_dim": 16, "enc_layers": 1,
              "align_steps": 3, "unified_steps": 4, "instruct_steps": 3, "batch_size": 6, "warmup_steps": 1,
              "eval_questions": 6, "eval_prompts": 4, "eval_samples": 2}
ARGS = overrides({**{k: v for k, v in TINY.items() if k in ("model", "threads", "tensorboard", "save_every")}, "janus": JANUS_TINY})


# ---------------------------------------------------------------------------------------------
# Scenes


def test_detector_reads_back_every_single_object_and_hand_drawn_images():
    for cell in range(4):
        for colour in scenes.COLOURS:
            for shape in scenes.SHAPES:
                for size in scenes.SIZES:
                    scene = scenes.Scene((scenes.Obj(cell, colour, shape, size),))
                    assert scenes.detect(scenes.render(scene)) == scene
    # Drawn by hand, not by render(): a 13x13 blue square centred in the bottom-right cell,
    # a 7x7 red square top left; slightly off colours still snap to the palette.
    img = np.zeros((3, 32, 32), dtype=np.float32)
    img[2, 18:31, 18:31] = 0.9
    img[0, 5:12, 5:12] = 0.8
    img[1, 5:12, 5:12] = 0.1
    assert scenes.detect(img).caption() == "small red square top left, big blue square bottom right"
    assert scenes.detect(np.zeros((3, 32, 32))) == scenes.Scene(())
    # A cell with a blob that is no shape (a thin line) is unreadable: the verdict is all-or-nothing.
    img = np.zeros((3, 32, 32), dtype=np.float32)
    img[1, 8, 0:16] = 1.0
    assert scenes.detect(img) is None


def test_questions_have_exact_answers():
    scene = scenes.Scene((scenes.Obj(0, "red", "circle", "big"), scenes.Obj(3, "red", "square", "small")))
    answers = {}
    rng = random.Random(0)
    for _ in range(300):
        q, a = scenes.question(scene, rng)
        answers[q] = a
    assert answers["how many shapes?"] == "2"
    assert answers["how many red?"] == "2" and answers["how many blue?"] == "0"
    assert answers["how many circles?"] == "1" and answers["how many triangles?"] == "0"
    assert answers["colour top left?"] == "red" and answers["colour top right?"] == "none"
    assert answers["shape bottom right?"] == "square"


def test_scene_splits_are_disjoint_under_the_canonical_key():
    rng = random.Random(1)
    train = {scenes.sample_scene(rng, "train").key() for _ in range(2000)}
    test = {scenes.sample_scene(rng, "test").key() for _ in range(100)}
    assert train and test and not train & test
    # Digits: held-out images are disjoint by index.
    assert not set(digits.indices("train")) & set(digits.indices("test"))


def test_digit_classifier_is_accurate_on_held_out_digits_and_reads_hand_made_ones():
    clf = digits.classifier()
    assert clf.accuracy > 0.9
    one = np.zeros((8, 8), dtype=np.float32)
    one[1:7, 3:5] = 1.0  # a vertical bar
    zero = np.zeros((8, 8), dtype=np.float32)
    zero[1:7, 2] = zero[1:7, 5] = 1.0
    zero[1, 2:6] = zero[6, 2:6] = 1.0  # a ring
    assert list(clf.predict(np.stack([digits.to_rgb(one), digits.to_rgb(zero)]))) == [1, 0]


# ---------------------------------------------------------------------------------------------
# VQ tokenizer


def test_quantize_and_ema_match_naive_loops():
    g = torch.Generator().manual_seed(0)
    z, book = torch.randn(20, 3, generator=g), torch.randn(5, 3, generator=g)
    idx = vq.quantize(z, book)
    assert idx.tolist() == [min(range(5), key=lambda k: float(((z[n] - book[k]) ** 2).sum())) for n in range(20)]
    size, sums = torch.rand(5, generator=g) + 0.5, torch.randn(5, 3, generator=g)
    new_size, new_sum, new_book = vq.ema_update(size, sums, z, idx, decay=0.9, eps=0.0)
    for k in range(5):
        members = [n for n in range(20) if idx[n] == k]
        assert new_size[k].item() == pytest.approx(0.9 * size[k].item() + 0.1 * len(members), rel=1e-6)
        ref = 0.9 * sums[k] + 0.1 * (z[members].sum(0) if members else torch.zeros(3))
        torch.testing.assert_close(new_sum[k], ref)
        torch.testing.assert_close(new_book[k], ref / new_size[k])


@pytest.mark.slow
def test_vq_round_trip_error_is_bounded_on_held_out_images(tmp_path):
    """The VQ stage of `r1lab janus` itself, at its default length, on scenes: held-out
    reconstructions stay well below the error of predicting the mean image, and the exact
    detector reads every one (the round trip keeps what the verifier checks)."""
    import dataclasses

    from r1lab.recipes.janus import load_vq, train_vq

    base = Config()
    cfg = dataclasses.replace(base, threads=1, tensorboard=False, save_every=1000,
                              janus=dataclasses.replace(base.janus, digit_fraction=0.0))
    model = load_vq(cfg, train_vq(cfg, tmp_path / "vq"))
    rng = random.Random(0)
    x = torch.as_tensor(np.stack([scenes.render(scenes.sample_scene(rng, "test")) for _ in range(64)]))
    with torch.no_grad():
        codes = model.encode(x)
        recon = model.decode(codes)
    assert codes.shape == (64, 64) and int(codes.max()) < cfg.janus.vq_codebook
    mse = torch.nn.functional.mse_loss(recon, x).item()
    baseline = ((x - x.mean(0)) ** 2).mean().item()  # predicting the mean held-out image
    assert mse < 0.4 * baseline, (mse, baseline)  # measured: 0.016 against 0.057 (0.28)
    assert all(scenes.detect(im) is not None for im in recon.numpy())


# ---------------------------------------------------------------------------------------------
# The unified model


def tiny_model(seed: int = 0) -> tuple[JanusModel, CharTokenizer]:
    cfg = Config()
    cfg.model.d_model, cfg.model.n_layers, cfg.model.n_heads, cfg.model.n_kv_heads = 32, 2, 2, 1
    cfg.model.n_routed_experts, cfg.model.d_expert, cfg.model.max_seq_len = 4, 16, 192
    cfg.janus.vq_codebook, cfg.janus.enc_dim, cfg.janus.enc_layers = 16, 16, 1
    tok = CharTokenizer.build()
    torch.manual_seed(seed)
    return JanusModel(cfg.model, tok.vocab_size, cfg.janus), tok


def mixed_rows(tok: CharTokenizer, n: int, seed: int) -> list[S.Row]:
    """`n` training rows of both directions, each from its own training item: even rows a drawing
    (prompt + random codes of a 16-entry codebook), odd rows a question and its answer."""
    from r1lab.recipes import janus

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        item = janus.draw_item(rng, "train", 0.3)
        rows.append(janus.qa_row(tok, item) if i % 2 else [S.Text(tok.prompt_ids(item.prompt)), S.Codes([rng.randrange(16) for _ in range(64)])])
    return rows


def test_transformer_fed_embeddings_equals_fed_ids():
    model, _ = tiny_model()
    ids = torch.randint(0, model.vocab_size, (2, 9))
    a = model.lm(ids).logits_BTV
    b = model.lm(None, embeds_BTD=model.lm.embed(ids)).logits_BTV
    assert torch.equal(a, b)


def test_cfg_logits_and_scale_one_is_the_conditional_model():
    cond, uncond = torch.randn(3, 7), torch.randn(3, 7)
    torch.testing.assert_close(cfg_logits(cond, uncond, 1.0), cond)
    torch.testing.assert_close(cfg_logits(cond, uncond, 0.0), uncond)
    torch.testing.assert_close(cfg_logits(cond, uncond, 3.0), uncond + 3 * (cond - uncond))
    model, tok = tiny_model()
    prompts = [tok.prompt_ids("draw small red square top left"), tok.prompt_ids("draw digit 3")]
    uncond_ids = [[p[0]] + [tok.pad_id] * (len(p) - 1) for p in prompts]
    plain, plain_logits = S.generate_codes(model, prompts, tok.pad_id, 0.0, torch.Generator().manual_seed(0))
    guided1, guided1_logits = S.generate_codes(model, prompts, tok.pad_id, 0.0, torch.Generator().manual_seed(0), 1.0, uncond_ids)
    _, guided3_logits = S.generate_codes(model, prompts, tok.pad_id, 0.0, torch.Generator().manual_seed(0), 3.0, uncond_ids)
    assert torch.equal(plain, guided1)
    for a, b in zip(plain_logits, guided1_logits):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(plain_logits[0], guided3_logits[0])  # guidance does change the distribution


def test_understanding_and_generation_share_the_transformer_weights():
    model, tok = tiny_model()
    img = scenes.render(scenes.Scene((scenes.Obj(1, "blue", "circle", "big"),)))
    und = [[S.Text([tok.bos_id]), S.Image(img), S.Text(tok.encode("how many?")), S.Text(tok.encode("1") + [tok.eos_id], loss=True)]]
    gen = [[S.Text(tok.prompt_ids("draw big blue circle top right")), S.Codes([i % 16 for i in range(64)])]]
    grads = {}
    for name, rows in (("und", und), ("gen", gen)):
        model.zero_grad()
        S.losses(model, S.assemble(model, rows, tok.pad_id)).total.backward()
        grads[name] = {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()}
    block = "lm.layers.0.attn.wq.weight"
    assert grads["und"][block] and grads["gen"][block]  # one transformer trained by both paths
    assert grads["und"]["und_encoder.patch.weight"] and not grads["gen"]["und_encoder.patch.weight"]  # decoupled encoders
    assert grads["gen"]["gen_head.2.weight"] and not grads["und"]["gen_head.2.weight"]
    assert sum(p.numel() for p in model.lm.parameters()) > 0 and all(isinstance(model.lm, Transformer) for _ in [0])
    # And changing the transformer changes both outputs.
    with torch.no_grad():
        before_t = S.losses(model, S.assemble(model, und, tok.pad_id)).text.item()
        before_c = S.losses(model, S.assemble(model, gen, tok.pad_id)).code.item()
        model.lm.layers[0].attn.wq.weight.add_(0.5)
        assert S.losses(model, S.assemble(model, und, tok.pad_id)).text.item() != before_t
        assert S.losses(model, S.assemble(model, gen, tok.pad_id)).code.item() != before_c


def test_left_padded_cached_sampling_matches_a_full_forward():
    model, tok = tiny_model()
    img = scenes.render(scenes.Scene((scenes.Obj(2, "green", "triangle", "big"),)))
    rows = [[S.Text([tok.bos_id]), S.Image(img), S.Text(tok.encode("q"))], [S.Text([tok.bos_id]), S.Image(img), S.Text(tok.encode("a longer one"))]]
    out = S.generate_text(model, rows, tok.pad_id, tok.eos_id, 4, 0.0, torch.Generator())
    for row, ids in zip(rows, out):  # greedy: each sampled token is the argmax of an uncached pass
        seq = list(row)
        for t in ids:
            b = S.assemble(model, [seq], tok.pad_id)
            h = model.hidden(b.embeds_BTD).normed_BTD[0, -1]
            assert int(model.text_logits(h[None]).argmax()) == t
            seq = seq + [S.Text([t])]


# ---------------------------------------------------------------------------------------------
# The command


def test_janus_end_to_end_writes_figures_grids_and_report(tmp_path):
    out = tmp_path / "run"
    assert main(["janus", "--out", str(out), *ARGS]) == 0
    s = json.loads((out / "summary.json").read_text())
    u = s["understanding"]
    assert 0 <= u["pass@1"] <= 1 and u["questions"] == 6
    kinds = [u[f"{k}_blind_majority"] for k in ("scene", "digit") if f"{k}_blind_majority" in u]  # each kind's own bar
    assert kinds and min(kinds) - 1e-9 <= u["blind_majority"] <= max(kinds) + 1e-9  # the overall bar is their weighted mean
    assert s["generation"]["guided"]["scene_prompts"] == 4 and s["generation"]["guided"]["digit_prompts"] == 10
    assert s["digit_classifier_heldout_accuracy"] > 0.9
    for stage in ("vq", "align", "unified", "instruct"):
        assert (out / stage / "metrics.jsonl").is_file()
    assert (out / "grids" / "generated_guided.png").is_file()
    html = (out / "report.html").read_text()
    assert "Janus" in html and "generated" in html


def test_janus_bad_config_is_one_line(capsys):
    assert main(["janus", "--janus.cfg_dropout", "1.5"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "janus.cfg_dropout" in err[0]


def test_length_buckets_give_the_one_batch_losses():
    model, tok = tiny_model()
    rows = mixed_rows(tok, 7, seed=3)
    buckets = S.length_buckets(rows)
    assert sorted(i for b in buckets for i in b) == list(range(7)) and len(buckets) == 2
    assert max(S.row_length(rows[i]) for i in buckets[0]) <= min(S.row_length(rows[i]) for i in buckets[1])
    with torch.no_grad():
        one = S.losses(model, S.assemble(model, rows, tok.pad_id))
        two = S.losses(model, [S.assemble(model, [rows[i] for i in b], tok.pad_id) for b in buckets])
    for a, b in ((one.text, two.text), (one.code, two.code)):
        assert torch.allclose(a, b, atol=1e-6)
    assert S.length_buckets(rows[:1]) == [[0]]


def test_blind_baselines_answer_from_the_training_answer_distribution():
    from r1lab.recipes import janus

    def item(q: str, a: str) -> janus.Item:
        return janus.Item(np.zeros((3, 32, 32), np.float32), "", "", q, a, "scene")

    none_red, three_red = janus.blind_baselines([item("how many red?", "0")], 0.3), janus.blind_baselines([item("how many red?", "3")], 0.3)
    assert none_red["blind_majority"] == 1.0 and three_red["blind_majority"] == 0.0
    assert 0.45 < none_red["blind_sampling"] < 0.7 and 0 < three_red["blind_sampling"] < 0.05  # P(no red) ~0.58, P(three red) ~0.005
    digit = janus.blind_baselines([item(digits.QUESTION, str(d)) for d in range(10)], 0.3)
    assert digit["blind_majority"] == 0.1 and abs(digit["blind_sampling"] - 0.1) < 0.01


# ---------------------------------------------------------------------------------------------
# The understanding encoder reads scenes (docs/janus.md, "Why the default could not read scenes")


def test_default_encoder_learns_to_count_a_scenes_shapes_beyond_the_blind_bar():
    """300 steps of one question about scenes ("how many shapes?"), a small dense LM: the default
    encoder input (4x, black = 0) answers all 60 held-out scenes; under SigLIP's 2x - 1 the same
    run stayed at 0.27, below the majority answer 0.53 (measured: docs/janus.md)."""
    cfg = Config()
    cfg.janus.enc_dim, cfg.janus.enc_layers = 32, 1
    mc = ModelConfig(ffn="dense", d_model=64, n_layers=2, n_heads=2, n_kv_heads=2, d_ff=128, max_seq_len=96)
    tok = CharTokenizer.build()
    torch.manual_seed(0)
    model = JanusModel(mc, tok.vocab_size, cfg.janus)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.0)
    q = "how many shapes?"

    def prefix(sc):
        return [S.Text([tok.bos_id]), S.Image(scenes.render(sc)), S.Text(tok.encode(PROMPT_TEMPLATE.format(question=q)))]

    rng = random.Random(0)
    for _ in range(300):
        batch = [scenes.sample_scene(rng, "train") for _ in range(16)]
        rows = [prefix(sc) + [S.Text(tok.encode(tok.completion_text("", str(len(sc.objects)))) + [tok.eos_id], loss=True)] for sc in batch]
        opt.zero_grad()
        S.losses(model, S.assemble(model, rows, tok.pad_id)).total.backward()
        opt.step()
    rng = random.Random(1)
    test = [scenes.sample_scene(rng, "test") for _ in range(60)]
    with torch.no_grad():
        out = S.generate_text(model.eval(), [prefix(sc) for sc in test], tok.pad_id, tok.eos_id, 12, 0.0, torch.Generator())
    said = [tok.decode(ids).split("<answer>")[-1].split("</answer>")[0] for ids in out]
    accuracy = np.mean([a == str(len(sc.objects)) for a, sc in zip(said, test)])
    majority = np.bincount([len(sc.objects) for sc in test]).max() / len(test)  # the best blind answer, on the test scenes themselves
    assert accuracy >= majority + 0.3, (accuracy, majority)


def test_encoder_patch_size_position_embedding_and_old_runs_pixels(tmp_path):
    from r1lab.recipes import janus as J

    cfg = Config()
    cfg.janus.enc_dim, cfg.janus.enc_layers, cfg.janus.enc_patch, cfg.janus.und_pos = 16, 1, 4, True
    model = JanusModel(ModelConfig(ffn="dense", d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, d_ff=64), 100, cfg.janus)
    img = torch.as_tensor(scenes.render(scenes.Scene((scenes.Obj(0, "red", "square", "big"),))))[None]
    assert model.image_features(img).shape == (1, 64, 32) and model.n_patches == 64
    with torch.no_grad():  # und_pos is added to every image's features, per patch
        a = model.image_features(img)
        model.und_pos.add_(1.0)
        assert torch.allclose(model.image_features(img), a + 1.0, atol=1e-5)
    row = [S.Text([1, 2]), S.Image(img[0].numpy())]
    assert S.row_length(row, model.n_patches) == 66 and S.row_length(row) == 18
    assert main(["janus", "--janus.enc_patch", "5"]) == 2
    # A run written before janus.enc_pixel_mean existed is rebuilt with the 2x - 1 it was trained on.
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "config.yaml").write_text("janus:\n  enc_dim: 16\n", encoding="utf-8")
    old = J.run_config(tmp_path / "old")
    assert (old.janus.enc_pixel_mean, old.janus.enc_pixel_std, old.janus.enc_dim) == (0.5, 0.5, 16)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "config.yaml").write_text("janus:\n  enc_pixel_mean: 0.0\n  enc_pixel_std: 1.0\n", encoding="utf-8")
    assert (J.run_config(tmp_path / "new").janus.enc_pixel_mean, Config().janus.enc_pixel_mean) == (0.0, 0.0)
    # Resuming such a run with today's code would switch its input mid-training: refused in one line.
    assert main(["janus", "--out", str(tmp_path / "old"), "--resume"]) == 2
