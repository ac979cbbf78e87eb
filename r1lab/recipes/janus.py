"""``r1lab janus``: Janus (arXiv:2410.13848; Janus-Pro arXiv:2501.17811) in miniature, from
scratch on a CPU: one r1lab Transformer that answers questions about images and draws them.

    vq        train the VQ-VAE image tokenizer (then frozen)
    align     stage I: the understanding encoder + adaptor and the image embedding + head learn
              on captioning and text-to-image data; the LM is frozen
    unified   stage II: everything trains on text, captioning and text-to-image data together
    instruct  stage III: instruction-style: questions answered in the R1 template (loss on the
              answer only), prompts to draw, text
    eval      held-out understanding (pass@k via the R1 reward) and generation accuracy (exact
              detector for scenes, the digit classifier for digits), with and without guidance

Each stage is a ``TrainLoop`` in its own sub-folder and resumes from it; a later stage starts
from the previous stage's last checkpoint. Departures from Janus: no pretrained LLM or SigLIP
(everything starts from scratch, so stage I trains a random frozen LM's adaptors); text data is
the task's own corpus (``task``, chain by default). Run folder::

    <run>/config.yaml, tokenizer.json
    <run>/vq/ align/ unified/ instruct/   checkpoints/, metrics.jsonl
    <run>/eval/janus.json, grids/*.png, summary.json, report.html
"""

from __future__ import annotations

import functools
import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from r1lab import checkpoint, tracking
from r1lab import config as config_lib
from r1lab.config import Config
from r1lab.evaluate import pass_at_k
from r1lab.janus import digits, scenes
from r1lab.janus import sequence as S
from r1lab.janus.model import N_CODES, JanusModel, lm_config
from r1lab.janus.vq import VQVAE
from r1lab.model import moe
from r1lab.recipes import common, pretrain, zero
from r1lab.recipes.loop import TrainLoop
from r1lab.rewards import RewardWeights, score
from r1lab.tasks import get_task
from r1lab.tokenizer import PROMPT_TEMPLATE, BaseTokenizer

STAGES = ("align", "unified", "instruct")
SEQ_LEN = 192
"room for the longest sequence: a two-object drawing prompt (~90 characters) + 64 codes"
ANSWER_TOKENS = 16
"longest sampled answer (tokens); the longest answer is a shape name in the template"


@dataclass
class Item:
    """One image with its texts: caption (stage I/II), question + exact answer (stage III), and the
    prompt that draws it."""

    pixels: np.ndarray  # (3, 32, 32)
    caption: str
    prompt: str
    question: str
    answer: str
    kind: str  # "scene" or "digit"
    scene: scenes.Scene | None = None
    label: int = -1


def draw_item(rng: random.Random, split: str, digit_fraction: float) -> Item:
    if rng.random() < digit_fraction:
        px, label = digits.sample(rng, split)
        return Item(px, f"digit {label}", digits.generation_prompt(label), digits.QUESTION, str(label), "digit", label=label)
    scene = scenes.sample_scene(rng, split)
    q, a = scenes.question(scene, rng)
    return Item(scenes.render(scene), scene.caption(), scenes.generation_prompt(scene), q, a, "scene", scene=scene)


# ---------------------------------------------------------------------------------------------
# Rows of the three kinds


def image_segment(pixels: np.ndarray, shared_vq: VQVAE | None) -> S.Image | S.Codes:
    """An image to understand: through the patch encoder (Janus's decoupled encoding), or, with
    ``shared_vq`` (``janus.und_input vq``), as its VQ codes through the generation embedding: one
    shared encoding for both directions, the design Janus argues against."""
    if shared_vq is None:
        return S.Image(pixels)
    return S.Codes(shared_vq.encode(torch.as_tensor(pixels[None]))[0].tolist(), loss=False)


def caption_row(tok: BaseTokenizer, item: Item, shared_vq: VQVAE | None = None) -> S.Row:
    return [S.Text([tok.bos_id]), image_segment(item.pixels, shared_vq), S.Text(tok.encode(item.caption) + [tok.eos_id], loss=True)]


def question_prefix(tok: BaseTokenizer, pixels: np.ndarray, question: str, shared_vq: VQVAE | None = None) -> S.Row:
    """<bos> <image> User: {question}\\nAssistant:  (the R1 template with the image before it)"""
    return [S.Text([tok.bos_id]), image_segment(pixels, shared_vq), S.Text(tok.encode(PROMPT_TEMPLATE.format(question=question)))]


def qa_row(tok: BaseTokenizer, item: Item, shared_vq: VQVAE | None = None) -> S.Row:
    return question_prefix(tok, item.pixels, item.question, shared_vq) + [S.Text(tok.encode(tok.completion_text("", item.answer)) + [tok.eos_id], loss=True)]


def shared(cfg: Config, vq: VQVAE) -> VQVAE | None:
    return vq if cfg.janus.und_input == "vq" else None


def prompt_ids(tok: BaseTokenizer, prompt: str, drop: bool = False) -> list[int]:
    """The drawing prompt in the template; ``drop``: its text replaced by pad (classifier-free
    guidance's unconditional input, same length so positions match)."""
    ids = tok.prompt_ids(prompt)
    if len(ids) + N_CODES > SEQ_LEN:
        raise ValueError(f"drawing prompt of {len(ids)} tokens does not fit {SEQ_LEN - N_CODES}")
    return [ids[0]] + [tok.pad_id] * (len(ids) - 1) if drop else ids


def build_rows(stage: str, tok: BaseTokenizer, task, vq: VQVAE, rng: random.Random, cfg: Config) -> tuple[list[S.Row], dict[str, int]]:
    """One training batch of ``stage``: a seeded mix of text, understanding and generation rows."""
    j = cfg.janus
    text_w = 0.0 if stage == "align" else j.text_weight  # stage I trains no LM weight: text would teach nothing
    gen_w = j.gen_weight / (1 - j.text_weight) * (1 - text_w) if j.text_weight < 1 else j.gen_weight
    rows: list[S.Row] = []
    gen_items: list[tuple[int, Item, bool]] = []
    counts = {"text": 0, "und": 0, "gen": 0}
    for _ in range(j.batch_size):
        u = rng.random()
        if u < text_w:
            rows.append([S.Text(pretrain.document(tok, task, rng, cfg.pretrain.worked_fraction)[:SEQ_LEN], loss=True)])
            counts["text"] += 1
        elif u < text_w + gen_w:
            item = draw_item(rng, "train", j.digit_fraction)
            gen_items.append((len(rows), item, rng.random() < j.cfg_dropout))
            rows.append([])
            counts["gen"] += 1
        else:
            item = draw_item(rng, "train", j.digit_fraction)
            qa = stage == "instruct" or (stage == "unified" and rng.random() < j.unified_qa)
            rows.append(qa_row(tok, item, shared(cfg, vq)) if qa else caption_row(tok, item, shared(cfg, vq)))
            counts["und"] += 1
    if gen_items:
        codes = vq.encode(torch.as_tensor(np.stack([it.pixels for _, it, _ in gen_items])))  # (n, 64)
        for (i, item, drop), c in zip(gen_items, codes):
            rows[i] = [S.Text(prompt_ids(tok, item.prompt, drop)), S.Codes(c.tolist())]
    return rows, counts


# ---------------------------------------------------------------------------------------------
# Stages


def train_vq(cfg: Config, run_dir: Path) -> Path:
    """The VQ-VAE tokenizer: MSE reconstruction + commitment, EMA codebook (``r1lab.janus.vq``)."""
    j = cfg.janus
    common.seed_everything(cfg.seed, cfg.threads)
    rng = random.Random(cfg.seed)
    model = VQVAE(j)
    opt = torch.optim.Adam(model.parameters(), lr=j.vq_lr)
    loop = TrainLoop(cfg, run_dir, "vq", model, opt, total=j.vq_steps, generators={"data": rng})
    if loop.finished:
        return loop.last_path
    model.train()
    with loop:
        for step in loop.steps():
            loop.set_lr(common.lr_at(step, j.vq_lr, 0, j.vq_steps, 0.1))
            x = torch.as_tensor(np.stack([draw_item(rng, "train", j.digit_fraction).pixels for _ in range(j.vq_batch_size)]))
            recon, idx, commit = model(x)
            mse = F.mse_loss(recon, x)
            bad, grad_norm = loop.backward_step(mse + commit, 0.0)
            used = int((model.cluster_size_K > 1e-2).sum())
            loop.end_step(step + 1, {"vq/recon_mse": mse.item(), "vq/commit": commit.item(), "vq/codes_used": used, "vq/grad_norm": grad_norm},
                          bad=bad, postfix={"mse": f"{mse.item():.4f}"})
    if loop.last_path is None:  # vq_steps 0: an untrained tokenizer, saved so that later stages find one
        loop.last_path = checkpoint.save(run_dir, 0, model, opt, state=common.model_state(model))
    return loop.last_path


def load_vq(cfg: Config, path: Path) -> VQVAE:
    vq = VQVAE(cfg.janus)
    checkpoint.apply(vq, checkpoint.load(path))
    return vq.eval()


def new_model(cfg: Config, tok: BaseTokenizer) -> JanusModel:
    common.new_model(lm_config(cfg.model, SEQ_LEN), tok.vocab_size)  # the LM's memory check, one line on failure
    return JanusModel(lm_config(cfg.model, SEQ_LEN), tok.vocab_size, cfg.janus)


def steps_of(cfg: Config, stage: str) -> int:
    return {"align": cfg.janus.align_steps, "unified": cfg.janus.unified_steps, "instruct": cfg.janus.instruct_steps}[stage]


def train_stage(cfg: Config, stage: str, run_dir: Path, vq: VQVAE, tok: BaseTokenizer, start: Path | None) -> Path | None:
    """One of Janus's three stages, from ``start`` (the previous stage's checkpoint) or scratch."""
    j = cfg.janus
    total = steps_of(cfg, stage)
    common.seed_everything(cfg.seed + STAGES.index(stage) + 1, cfg.threads)
    model = new_model(cfg, tok)
    if start is not None:
        checkpoint.apply(model, checkpoint.load(start))
    for p in model.lm.parameters():
        p.requires_grad_(stage != "align")  # stage I: the LM is frozen
    opt = common.make_optimizer(model, j.lr, cfg.pretrain.weight_decay)
    rng = random.Random(cfg.seed * 1000 + STAGES.index(stage))
    task = get_task(cfg.task, seed=cfg.seed)
    loop = TrainLoop(cfg, run_dir, stage, model, opt, total=total, generators={"data": rng}, start_path=start)
    if loop.finished or total == 0:
        return loop.last_path
    model.train()
    with loop:
        for step in loop.steps():
            t0 = time.perf_counter()
            lr = loop.set_lr(common.lr_at(step, j.lr, j.warmup_steps, total, cfg.pretrain.min_lr_ratio))
            rows, counts = build_rows(stage, tok, task, vq, rng, cfg)
            batches = [S.assemble(model, [rows[i] for i in idx], tok.pad_id) for idx in S.length_buckets(rows, model.n_patches)]
            out = S.losses(model, batches)
            bad, grad_norm = loop.backward_step(out.total, cfg.pretrain.grad_clip)
            load_LE = moe.after_optimizer_step(model, step + 1, stepped=bad is None)
            metrics = {f"{stage}/text_loss": out.text.item(), f"{stage}/code_loss": out.code.item(), f"{stage}/aux_loss": out.aux.item(),
                       f"{stage}/lr": lr, f"{stage}/grad_norm": grad_norm, f"{stage}/rows_gen": counts["gen"],
                       f"{stage}/tokens_per_s": float(sum(b.mask_BT.sum() for b in batches)) / (time.perf_counter() - t0), **moe.balance_metrics(model, load_LE)}
            loop.end_step(step + 1, metrics, bad=bad, load_LE=load_LE,
                          postfix={"text": f"{out.text.item():.3f}", "code": f"{out.code.item():.3f}"})
    return loop.last_path


PIXELS_BEFORE_FIX = {"enc_pixel_mean": 0.5, "enc_pixel_std": 0.5}
"how the understanding encoder read pixels (2x - 1) in runs whose config.yaml predates the two settings"


def run_config(run: Path) -> Config:
    """A janus run's own config (``<run>/config.yaml``); a run written before ``janus.enc_pixel_mean``
    existed read its pixels as 2x - 1, and is rebuilt that way rather than with today's default."""
    data = config_lib.load_yaml(run / "config.yaml")
    j = data.setdefault("janus", {}) if isinstance(data.get("janus", {}), dict) else data["janus"]
    if isinstance(j, dict) and "enc_pixel_mean" not in j and "enc_pixel_std" not in j:
        j.update(PIXELS_BEFORE_FIX)
    return config_lib.build(data)


def load_janus(cfg: Config, path: Path, tok: BaseTokenizer) -> JanusModel:
    model = new_model(cfg, tok)
    checkpoint.apply(model, checkpoint.load(path))
    return model.eval()


# ---------------------------------------------------------------------------------------------
# Evaluation


def exact(answer: str, reference: str) -> float:
    return float(answer.strip() == reference)


def eval_items(cfg: Config) -> list[Item]:
    """The held-out questions of every evaluation of a run (test-split scenes and digits, seeded)."""
    rng = random.Random(cfg.eval.seed)
    return [draw_item(rng, "test", cfg.janus.digit_fraction) for _ in range(cfg.janus.eval_questions)]


def eval_understanding(model: JanusModel, tok: BaseTokenizer, cfg: Config, vq: VQVAE, chunk: int = 128) -> dict:
    """pass@k of answers to held-out questions (test-split scenes and digits), each completion
    scored by the R1 reward (format + exact answer), n = janus.eval_samples at eval temperature."""
    n = cfg.janus.eval_samples
    items = eval_items(cfg)
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    prefixes = [question_prefix(tok, it.pixels, it.question, shared(cfg, vq)) for it in items for _ in range(n)]
    texts: list[str] = []
    for i in range(0, len(prefixes), chunk):
        ids = S.generate_text(model, prefixes[i : i + chunk], tok.pad_id, tok.eos_id, ANSWER_TOKENS, cfg.eval.sample.temperature, gen)
        texts += [tok.decode(x) for x in ids]
    weights = RewardWeights(cfg.rl.format_weight, cfg.rl.correct_weight, 0.0)
    correct = [[score(texts[q * n + s], lambda a, it=it: exact(a, it.answer), weights).correct for s in range(n)] for q, it in enumerate(items)]
    ks = sorted({1, n})
    out = {f"pass@{k}": float(np.mean([pass_at_k(n, int(sum(c)), k) for c in correct])) for k in ks}
    for kind in ("scene", "digit"):
        sel = [c for c, it in zip(correct, items) if it.kind == kind]
        if sel:
            out[f"{kind}_pass@1"] = float(np.mean([pass_at_k(n, int(sum(c)), 1) for c in sel]))
    # Greedy answers (one each): the model's best guess, to set against the blind majority answer.
    greedy: list[str] = []
    for i in range(0, len(items), chunk):
        part = [question_prefix(tok, it.pixels, it.question, shared(cfg, vq)) for it in items[i : i + chunk]]
        greedy += [tok.decode(x) for x in S.generate_text(model, part, tok.pad_id, tok.eos_id, ANSWER_TOKENS, 0.0, gen)]
    g_ok = [score(t, lambda a, it=it: exact(a, it.answer), weights).correct for t, it in zip(greedy, items)]
    out["greedy_accuracy"] = float(np.mean(g_ok))
    for kind in ("scene", "digit"):
        sel = [c for c, it in zip(g_ok, items) if it.kind == kind]
        if sel:
            out[f"{kind}_greedy_accuracy"] = float(np.mean(sel))
    out.update(blind_baselines(items, cfg.janus.digit_fraction))
    for kind in ("scene", "digit"):  # each kind's own bar: scene answers are far from uniform, digits nearly so
        sel = [it for it in items if it.kind == kind]
        if sel:
            out.update({f"{kind}_{k}": v for k, v in blind_baselines(sel, cfg.janus.digit_fraction).items()})
    out.update(n=n, temperature=cfg.eval.sample.temperature, questions=len(items),
               examples=[{"question": it.question, "answer": it.answer, "completion": texts[q * n]} for q, it in enumerate(items[:8])])
    return out


BLIND_DRAWS = 20_000
"training questions drawn to estimate each question's answer distribution for the blind baselines"


@functools.lru_cache(maxsize=4)
def answer_counts(digit_fraction: float) -> dict[str, dict[str, int]]:
    """How often each answer follows each question in ``BLIND_DRAWS`` training questions (fixed seed)."""
    rng = random.Random(12345)
    counts: dict[str, dict[str, int]] = {}
    for _ in range(BLIND_DRAWS):
        if rng.random() < digit_fraction:
            q, a = digits.QUESTION, str(digits.sample(rng, "train")[1])
        else:
            q, a = scenes.question(scenes.sample_scene(rng, "train"), rng)
        counts.setdefault(q, {}).setdefault(a, 0)
        counts[q][a] += 1
    return counts


def blind_baselines(items: list[Item], digit_fraction: float) -> dict[str, float]:
    """What a model that never looks at the image scores on ``items``: answering each question with
    its most frequent training answer (``blind_majority``, the bar for greedy accuracy), and
    sampling the training answer distribution (``blind_sampling``, the bar for pass@1 at
    temperature 1). Estimated from ``BLIND_DRAWS`` training questions (a fixed seed)."""
    counts = answer_counts(digit_fraction)
    majority = [float(max(counts.get(it.question, {"": 1}).items(), key=lambda kv: kv[1])[0] == it.answer) for it in items]
    sampling = [counts.get(it.question, {}).get(it.answer, 0) / max(1, sum(counts.get(it.question, {}).values())) for it in items]
    return {"blind_majority": float(np.mean(majority)), "blind_sampling": float(np.mean(sampling))}


def eval_prompts(cfg: Config) -> list[tuple[str, scenes.Scene | None, int]]:
    """Held-out drawing prompts: distinct test-split scenes, then the ten digits."""
    rng = random.Random(cfg.eval.seed + 1)
    seen: dict[str, scenes.Scene] = {}
    for _ in range(100 * cfg.janus.eval_prompts):
        if len(seen) == cfg.janus.eval_prompts:
            break
        sc = scenes.sample_scene(rng, "test")
        seen.setdefault(sc.key(), sc)
    return [(scenes.generation_prompt(sc), sc, -1) for sc in seen.values()] + [(digits.generation_prompt(d), None, d) for d in range(10)]


def eval_generation(model: JanusModel, vq: VQVAE, tok: BaseTokenizer, cfg: Config, scale: float, chunk: int = 64) -> tuple[dict, np.ndarray]:
    """Draw every held-out prompt once (guidance ``scale``; 1 = no guidance) and check it:
    the scene detector must read back exactly the prompt's scene; the classifier must read the
    prompt's digit. Returns (figures, images (N, 3, 32, 32))."""
    prompts = eval_prompts(cfg)
    gen = torch.Generator().manual_seed(cfg.eval.seed)
    images = []
    for i in range(0, len(prompts), chunk):
        part = prompts[i : i + chunk]
        cond = [prompt_ids(tok, p) for p, _, _ in part]
        uncond = [prompt_ids(tok, p, drop=True) for p, _, _ in part] if scale != 1 else None
        codes, _ = S.generate_codes(model, cond, tok.pad_id, cfg.janus.image_temperature, gen, scale, uncond)
        with torch.no_grad():
            images.append(vq.decode(codes).numpy())
    images = np.concatenate(images)
    clf = digits.classifier()
    scene_ok = [scenes.detect(im) == sc for im, (_, sc, _) in zip(images, prompts) if sc is not None]
    digit_idx = [k for k, (_, sc, _) in enumerate(prompts) if sc is None]
    digit_ok = list(clf.predict(images[digit_idx]) == np.array([prompts[k][2] for k in digit_idx])) if digit_idx else []
    figures = {"scene_accuracy": float(np.mean(scene_ok)) if scene_ok else float("nan"),
               "digit_accuracy": float(np.mean(digit_ok)) if digit_ok else float("nan"),
               "scene_prompts": len(scene_ok), "digit_prompts": len(digit_ok), "cfg_scale": scale,
               "verdicts": [bool(v) for v in scene_ok] + [bool(v) for v in digit_ok]}
    return figures, images


def grids(run_dir: Path, cfg: Config, images: np.ndarray, verdicts: list[bool], title: str, name: str) -> list[Path]:
    from r1lab.report import plots

    prompts = eval_prompts(cfg)
    short = [p.replace("draw ", "").replace(" top ", " T").replace(" bottom ", " B").replace("left", "L").replace("right", "R") for p, _, _ in prompts]
    out = []
    scene_n = sum(sc is not None for _, sc, _ in prompts)
    pick = list(range(min(22, scene_n))) + list(range(scene_n, len(prompts)))
    labels = [("ok " if verdicts[k] else "X ") + short[k][:34] for k in pick]
    out.append(plots.image_grid(run_dir / "grids" / f"{name}.png", [images[k] for k in pick], title=title, labels=labels, ncols=8))
    return out


RESUME_CHECKED = ("task", "seed", "model", "janus", "eval", "pretrain")
"the settings a janus run computes with: --resume refuses to change them"


def main(cfg: Config) -> Path:
    t0, c0 = time.time(), time.process_time()
    # Both models' sizes are checked before any stage trains: the VQ stage must not run for
    # minutes before an absurd --model.d_model is refused.
    common.check_trainable(lambda: VQVAE(cfg.janus), "VQ tokenizer", "janus.vq_codebook, janus.vq_channels, janus.vq_dim")
    common.check_trainable(lambda: JanusModel(lm_config(cfg.model, SEQ_LEN), common.load_tokenizer("").vocab_size, cfg.janus),
                           "janus model", f"{common.MODEL_KEYS}, janus.vq_codebook, janus.enc_dim, janus.enc_layers, janus.enc_patch")
    saved = common.run_dir_for(cfg, "janus") / "config.yaml"
    if cfg.resume and saved.is_file() and "enc_pixel_mean" not in (config_lib.load_yaml(saved).get("janus") or {}):
        raise common.StageError(f"--resume: {saved} predates janus.enc_pixel_mean (its encoder read pixels as 2x - 1, the default "
                                "reads them as x): finish it with the code that started it, or start a new run with another --out")
    run_dir = zero.pipeline_dir(cfg, "janus", ("vq", *STAGES), sections=RESUME_CHECKED)
    common.prepare_run_dir(run_dir, cfg)
    tok = common.load_tokenizer(run_dir)
    print(f"janus: run folder {run_dir}")
    # Load the digits and fit their classifier before any stage seeds its RNGs: importing
    # scikit-learn draws from Python's global RNG, which a resumed process would otherwise
    # draw mid-stage, and resume would no longer be bit-identical.
    digits.indices("train"), digits.indices("test"), digits.classifier()
    timings = {}
    with common.StopFlag() as stop:
        t = time.time()
        vq_path = train_vq(cfg, run_dir / "vq")
        timings["vq_s"] = time.time() - t
        vq = load_vq(cfg, vq_path)
        path = None
        for stage in STAGES:
            t = time.time()
            path = train_stage(cfg, stage, run_dir / stage, vq, tok, path) or path
            timings[f"{stage}_s"] = time.time() - t
        stop.check_done("training")
        if path is None:
            raise common.StageError("janus: every stage has 0 steps: nothing to evaluate")
        t = time.time()
        common.seed_everything(cfg.seed, cfg.threads)
        model = load_janus(cfg, path, tok)
        # The tokenizer's round trip on held-out images, and the checker's own accuracy.
        rng = random.Random(cfg.eval.seed)
        x = torch.as_tensor(np.stack([draw_item(rng, "test", cfg.janus.digit_fraction).pixels for _ in range(200)]))
        with torch.no_grad():
            vq_mse = F.mse_loss(vq.decode(vq.encode(x)), x).item()
        und = eval_understanding(model, tok, cfg, vq)
        gen_plain, img_plain = eval_generation(model, vq, tok, cfg, 1.0)
        gen_cfg, img_cfg = eval_generation(model, vq, tok, cfg, cfg.janus.cfg_scale)
        timings["eval_s"] = time.time() - t
    timings["cpu_s"] = time.process_time() - c0  # this process's CPU time (all its threads); wall times above
    n_total = sum(p.numel() for p in model.parameters())
    n_lm = sum(p.numel() for p in model.lm.parameters())
    summary = {
        "janus": True, "task": cfg.task,
        "understanding": {k: v for k, v in und.items() if k != "examples"},
        "generation": {"guided": {k: v for k, v in gen_cfg.items() if k != "verdicts"}, "unguided": {k: v for k, v in gen_plain.items() if k != "verdicts"}},
        "vq_heldout_mse": vq_mse, "digit_classifier_heldout_accuracy": digits.classifier().accuracy,
        "parameters": {"total": n_total, "lm": n_lm}, "timings": timings, "wall_s": time.time() - t0, "threads": cfg.threads,
        "examples": und["examples"],
    }
    (run_dir / "eval").mkdir(exist_ok=True)
    (run_dir / "eval" / "janus.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    grids(run_dir, cfg, img_cfg, gen_cfg["verdicts"], f"held-out prompts, guidance {cfg.janus.cfg_scale:g} (ok: detector/classifier agrees)", "generated_guided")
    grids(run_dir, cfg, img_plain, gen_plain["verdicts"], "held-out prompts, no guidance (scale 1)", "generated_unguided")
    rows = [{"": "model", "greedy accuracy": und["greedy_accuracy"], "pass@1": und["pass@1"], f"pass@{und['n']}": und.get(f"pass@{und['n']}"),
             "scenes greedy": und.get("scene_greedy_accuracy"), "digits greedy": und.get("digit_greedy_accuracy")},
            {"": "blind (no image)", "greedy accuracy": und["blind_majority"], "pass@1": und["blind_sampling"],
             "scenes greedy": und.get("scene_blind_majority"), "digits greedy": und.get("digit_blind_majority")}]
    print(tracking.format_table(rows, title=f"janus: held-out understanding ({und['questions']} questions; greedy, and n={und['n']} at T={und['temperature']}; "
                                             "blind: the training answer distribution per question, its majority / sampled)"))
    grow = [{"guidance": g["cfg_scale"], "scene accuracy": g["scene_accuracy"], "digit accuracy": g["digit_accuracy"]} for g in (gen_plain, gen_cfg)]
    print(tracking.format_table(grow, title=f"janus: held-out generation ({gen_cfg['scene_prompts']} scene prompts by the exact detector, "
                                             f"10 digits by a classifier of held-out accuracy {digits.classifier().accuracy:.3f})"))
    print(f"janus: VQ held-out reconstruction MSE {vq_mse:.5f}; {n_total / 1e6:.2f}M parameters ({n_lm / 1e6:.2f}M LM); {summary['wall_s']:.0f} s")
    from r1lab.report import html as report_html

    print(f"janus: report {report_html.build(run_dir)}")
    return run_dir
