"""Print completions of a checkpoint for given questions (or held-out problems), with their scores."""

from __future__ import annotations

import torch

from r1lab import rollout, speculative
from r1lab.config import Config
from r1lab.recipes import common
from r1lab.rewards import RewardWeights, Score, extract_answer, format_reward
from r1lab.tasks import get_task


def main(cfg: Config) -> list[str]:
    if not cfg.init:
        raise common.StageError("sample needs --init RUN_OR_CHECKPOINT_FOLDER")
    common.check_sampling(max(len(cfg.generate.questions), 1) * cfg.generate.n, cfg.generate.sample.max_new_tokens, "generate.n (or the number of questions)")
    common.seed_everything(cfg.seed, cfg.threads)
    model, ckpt = common.load_model(cfg.init)
    # again with the model: its cache and logits counted, each row's tokens capped by its context
    common.check_sampling(max(len(cfg.generate.questions), 1) * cfg.generate.n, cfg.generate.sample.max_new_tokens, "generate.n (or the number of questions)", model=model)
    tok = common.load_tokenizer(cfg.init)
    g = cfg.generate
    task = get_task(cfg.task, seed=cfg.seed)
    examples = None if g.questions else task.examples("test", 4, cfg.eval.seed)
    questions = g.questions or [ex.question for ex in examples]
    prompts = [tok.prompt_ids(q) for q in questions for _ in range(g.n)]
    gen = torch.Generator().manual_seed(cfg.seed)
    if g.speculative:
        if model.mtp is None:
            raise common.StageError(f"--generate.speculative needs a model with an MTP module; {ckpt.path} has model.mtp_depth 0")
        # temperature 0 is greedy decoding, as in rollout.sample; drafting then keeps greedy output identical
        ro, stats = speculative.sample(model, prompts, g.sample, tok.eos_id, tok.pad_id, gen, greedy=g.sample.temperature == 0)
        print(f"sample: MTP drafts accepted {stats.accepted}/{stats.drafts} ({stats.acceptance_rate:.1%}), {stats.forward_passes} decode passes")
    else:
        ro = rollout.sample(model, prompts, g.sample, tok.eos_id, tok.pad_id, gen)
    texts = [tok.decode_completion(ro.completion_ids(i)) for i in range(len(prompts))]
    weights = RewardWeights(cfg.rl.format_weight, cfg.rl.correct_weight, cfg.rl.partial_weight)
    print(f"sample: {ckpt.path}, temperature {g.sample.temperature}, {g.n} per question")
    for qi, question in enumerate(questions):
        print(f"\n=== {question}" + (f"   (reference: {examples[qi].answer})" if examples else ""))
        for text in texts[qi * g.n : (qi + 1) * g.n]:
            if examples:
                s: Score = task.score(text, examples[qi], weights)
                verdict = f"[format {s.format:.0f} correct {s.correct:.0f}]"
            else:
                verdict = f"[format {format_reward(text):.0f} answer {extract_answer(text)!r}]"
            print(f"{verdict} {text!r}")
    return texts
