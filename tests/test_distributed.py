"""Scale-out with torchrun: real 2-process gloo jobs on the CPU (``r1lab <stage> --nproc 2``).

Fast tests (default suite) check the one-process behaviour of the helpers, the CLI's refusals and
the sharded checkpoint format through a one-rank process group. The 2-process jobs take tens of
seconds on a shared 2-core machine and are marked slow: DDP and FSDP2 follow one process of twice
the batch (loss curves and weights to float tolerance), a DCP checkpoint resumes at one process
(reshard 2 -> 1) and exports, one rank killed with SIGKILL ends the job and ``--resume`` continues
bit-identical, RL keeps whole GRPO groups per rank and, given the same rollouts, reproduces the
one-process gradient (DDP and FSDP2), with ``rl.group_seeds`` 2 ranks (DDP, FSDP2) follow one
process's RL run figure for figure, FSDP2 RL resumes bit-identically, DAPO dynamic sampling keeps
the ranks in step (full, the cap, a rank short of groups), and only rank 0 prints and logs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, overrides
from r1lab import checkpoint, distributed
from r1lab.cli import main
from r1lab.config import ModelConfig
from r1lab.model.transformer import Transformer
from r1lab.recipes import common
from r1lab.tracking import read_metrics

ENV = {**os.environ, "R1LAB_NO_PROGRESS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
# The balance loss is a per-rank mean, so it is off; the aux-free bias and an MTP module are on.
MODEL = {**TINY["model"], "aux_loss_coef": 0.0, "router": "sigmoid", "bias_update_speed": 0.001, "mtp_depth": 1}
STEPS = 8
BASE = [*overrides({"model": MODEL, "threads": 1, "tensorboard": False}), "--pretrain.steps", str(STEPS), "--pretrain.warmup_steps", "2",
        "--save_every", "2", "--keep_checkpoints", "100"]


def r1lab(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1lab", *args], env=ENV, capture_output=True, text=True, timeout=timeout)


def losses(run: Path) -> list[float]:
    return [row["pretrain/loss"] for row in read_metrics(run / "metrics.jsonl")]


def weights(path: Path) -> dict[str, torch.Tensor]:
    """The model of a checkpoint (sharded or not), read into one plain process."""
    model, _ = common.load_model(path)
    return model.state_dict()


def comparable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "time" and not k.startswith("time/") and not k.endswith("tokens_per_s")}


# ---------------------------------------------------------------------------------------------
# One process (default suite)


def test_helpers_are_no_ops_in_one_process():
    assert not distributed.launched() and distributed.world() == 1 and distributed.rank() == 0 and distributed.is_main()
    t = torch.tensor([1.0, 2.0])
    assert distributed.all_reduce_(t) is t and t.tolist() == [1.0, 2.0]
    assert distributed.any_rank(True) and not distributed.any_rank(False)
    assert distributed.broadcast_object("x") == "x" and distributed.gather_objects(3) == [3]
    assert list(range(8))[distributed.shard_rows(8)] == list(range(8))
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, common.config_lib.DistConfig("fsdp2"), torch.device("cpu")) is model


def test_rl_refuses_under_torchrun_only_what_it_cannot_reduce():
    """Chunked log-probs read an untied head outside DDP's forward: refused with an MTP module under
    DDP (one line naming the key), accepted under FSDP2 or with a tied head."""
    from r1lab.config import Config, DistConfig, RLConfig
    from r1lab.recipes.rl import _check_distributed

    untied = ModelConfig(**{**MODEL, "tie_embeddings": False})
    cfg = Config(rl=RLConfig(logprob_chunk=16, dynamic_sampling=True))
    with pytest.raises(common.StageError, match="rl.logprob_chunk"):
        _check_distributed(cfg, untied)
    _check_distributed(Config(rl=cfg.rl, dist=DistConfig("fsdp2")), untied)
    _check_distributed(cfg, ModelConfig(**MODEL))


def test_nproc_is_refused_for_one_process_stages_and_bad_values(capsys):
    assert main(["sample", "--init", "nowhere", "--nproc", "2"]) == 2
    assert "runs in one process" in capsys.readouterr().err
    assert main(["pretrain", "--nproc", "zero"]) == 2
    assert "--nproc needs a positive number" in capsys.readouterr().err
    assert main(["pretrain", "--dist.strategy", "zero3"]) == 2


def test_sharded_checkpoint_round_trip_and_verification(tmp_path):
    """save_sharded through a one-rank gloo group, then read back in a plain process: weights,
    optimizer moments, per-rank RNG and state; a damaged shard is skipped like any checkpoint."""
    import torch.distributed as dist

    cfg = ModelConfig(**MODEL)
    torch.manual_seed(0)
    model = Transformer(cfg, 40)
    opt = common.make_optimizer(model, 1e-2, 0.1)
    ids = torch.randint(0, 40, (2, 12))
    for _ in range(2):
        opt.zero_grad()
        model(ids).logits_BTV.logsumexp(-1).mean().backward()
        opt.step()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        gen = torch.Generator().manual_seed(5)
        for step in (1, 2):
            path = checkpoint.save_sharded(tmp_path / "run", step, model, opt, state={"k": step}, generators={"g": gen}, keep=1)
    finally:
        dist.destroy_process_group()
    assert [p.name for p in checkpoint.checkpoints_dir(tmp_path / "run").iterdir()] == ["step_2"]  # pruned, no leftovers
    ckpt = checkpoint.load(path)
    assert ckpt.sharded and ckpt.world_size == 1 and ckpt.state == {"k": 2} and len(ckpt.rng_ranks) == 1
    fresh = Transformer(cfg, 40)
    fresh_opt = common.make_optimizer(fresh, 1e-2, 0.1)
    checkpoint.apply(fresh, ckpt, fresh_opt)
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
    for p, q in zip(model.parameters(), fresh.parameters()):
        if p not in opt.state:  # never had a gradient (the MTP module here): stays stateless, as in one process
            assert q not in fresh_opt.state
            continue
        assert torch.equal(opt.state[p]["exp_avg_sq"], fresh_opt.state[q]["exp_avg_sq"])
    g2 = torch.Generator()
    checkpoint.restore_rng(ckpt.rng_ranks[0], generators={"g": g2})
    assert torch.equal(g2.get_state(), gen.get_state())
    shard = next(path.glob("*.distcp"))
    shard.write_bytes(shard.read_bytes()[:-5])
    with pytest.warns(checkpoint.CheckpointWarning, match="truncated"):
        assert checkpoint.load_latest(tmp_path / "run") is None


# ---------------------------------------------------------------------------------------------
# Two processes (slow)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One process of batch 8, and 2 processes of batch 4 with DDP and with FSDP2."""
    root = tmp_path_factory.mktemp("dist")
    out = {}
    for name, extra in (("one", ["--pretrain.batch_size", "8"]),
                        ("ddp", ["--pretrain.batch_size", "4", "--nproc", "2"]),
                        ("fsdp2", ["--pretrain.batch_size", "4", "--nproc", "2", "--dist.strategy", "fsdp2"])):
        res = r1lab("pretrain", *BASE, *extra, "--out", str(root / name))
        assert res.returncode == 0, res.stderr[-3000:]
        out[name] = (root / name, res)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_processes_follow_one_process_of_twice_the_batch(runs, strategy):
    one, two = runs["one"][0], runs[strategy][0]
    assert losses(two) == pytest.approx(losses(one), rel=1e-5, abs=1e-6)
    w1, w2 = weights(one), weights(two)
    assert w1.keys() == w2.keys()
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], rtol=1e-4, atol=1e-5, msg=k)
    assert checkpoint.load_latest(two).world_size == 2  # a sharded checkpoint, one shard per rank
    assert len(list((checkpoint.checkpoints_dir(two) / f"step_{STEPS}").glob("*.distcp"))) == 2


@pytest.mark.slow
def test_only_rank_0_prints_and_logs(runs):
    run, res = runs["ddp"]
    assert res.stdout.count("pretrain: moe model") == 1 and res.stdout.count("final checkpoint") == 1
    assert [row["step"] for row in read_metrics(run / "metrics.jsonl")] == list(range(1, STEPS + 1))
    assert len((run / "expert_load.jsonl").read_text().splitlines()) == STEPS


def copy_up_to_step(src: Path, dst: Path, step: int) -> Path:
    """A copy of run ``src`` whose checkpoints end at ``step`` (as if it had been stopped there)."""
    shutil.copytree(src, dst)
    for p in checkpoint.checkpoints_dir(dst).glob("step_*"):
        if int(p.name.removeprefix("step_")) > step:
            shutil.rmtree(p)
    return dst


@pytest.mark.slow
def test_resume_at_one_process_from_a_two_process_checkpoint(runs, tmp_path):
    """Reshard 2 -> 1: the run continues from the DCP checkpoint in one plain process (batch 8:
    the same global batch and data stream) and follows the 2-process curve."""
    src, _ = runs["fsdp2"]
    run = copy_up_to_step(src, tmp_path / "resharded", 4)
    res = r1lab("pretrain", *BASE, "--pretrain.batch_size", "8", "--out", str(run), "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert "resuming pretrain" in res.stdout
    assert losses(run) == pytest.approx(losses(src), rel=1e-5, abs=1e-6)
    assert not checkpoint.load_latest(run).sharded  # one process writes the plain format again


@pytest.mark.slow
def test_resume_at_two_fsdp2_processes_from_a_one_process_checkpoint(runs, tmp_path):
    """1 -> 2: a plain checkpoint is scattered into FSDP2 shards (weights and AdamW moments)."""
    src, _ = runs["one"]
    run = copy_up_to_step(src, tmp_path / "scattered", 4)
    res = r1lab("pretrain", *BASE, "--pretrain.batch_size", "4", "--nproc", "2", "--dist.strategy", "fsdp2", "--out", str(run), "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    assert losses(run) == pytest.approx(losses(src), rel=1e-5, abs=1e-6)
    assert checkpoint.load_latest(run).world_size == 2


@pytest.mark.slow
def test_killing_one_rank_ends_the_job_and_resume_is_bit_identical(runs, tmp_path):
    reference, _ = runs["ddp"]
    run = tmp_path / "killed"
    argv = [sys.executable, "-m", "r1lab", "pretrain", *BASE, "--pretrain.batch_size", "4", "--nproc", "2", "--out", str(run)]
    proc = subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (checkpoint.checkpoints_dir(run) / "step_2").is_dir() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the job ended before a rank could be killed"
    rank1 = [pid for pid in _children(proc.pid) if _environ(pid).get("RANK") == "1"]
    assert rank1, "no rank-1 worker found under torchrun"
    os.kill(rank1[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0, "torchrun must fail the job when a rank dies"
    assert checkpoint.latest_step(run) < STEPS
    res = r1lab("pretrain", *BASE, "--pretrain.batch_size", "4", "--nproc", "2", "--out", str(run), "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    ref_rows = [comparable(r) for r in read_metrics(reference / "metrics.jsonl")]
    assert [comparable(r) for r in read_metrics(run / "metrics.jsonl")] == ref_rows
    w_ref, w_run = weights(reference), weights(run)
    assert all(torch.equal(w_ref[k], w_run[k]) for k in w_ref)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids = (task / "children").read_text().split()
        out += [int(k) for k in kids]
    return out + [g for k in out for g in _children(k)]


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(kv.split("=", 1) for kv in raw.decode(errors="replace").split("\0") if "=" in kv)


@pytest.fixture(scope="module")
def dense_dcp(tmp_path_factory):
    """A dense model pretrained by 2 FSDP2 processes (sharded checkpoints only)."""
    run = tmp_path_factory.mktemp("dense") / "base"
    res = r1lab("pretrain", *overrides(TINY), "--model.ffn", "dense", "--pretrain.batch_size", "4", "--nproc", "2",
                "--dist.strategy", "fsdp2", "--out", str(run))
    assert res.returncode == 0, res.stderr[-3000:]
    return run


@pytest.mark.slow
def test_a_sharded_checkpoint_exports_to_one_safetensors_file(dense_dcp, tmp_path):
    from safetensors.torch import load_file

    step = checkpoint.load_latest(dense_dcp)
    assert step.sharded
    assert main(["export", str(step.path), str(tmp_path / "hf")]) == 0  # a step folder; a run folder works too
    exported = load_file(tmp_path / "hf" / "model.safetensors")
    ours = weights(dense_dcp)
    torch.testing.assert_close(exported["model.embed_tokens.weight"], ours["embed.weight"], rtol=0, atol=0)
    assert len(exported) > 5


@pytest.mark.slow
def test_rl_with_two_processes_from_a_sharded_checkpoint(dense_dcp, tmp_path):
    run = tmp_path / "rl"
    args = ["rl", "--init", str(dense_dcp), *overrides({k: v for k, v in TINY.items() if k in ("rl", "threads", "tensorboard", "save_every")}),
            "--rl.eval_every", "3", "--out", str(run)]
    res = r1lab(*args, "--nproc", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and "eval/pass@1" in rows[-1]
    assert checkpoint.load_latest(run).world_size == 2
    assert res.stdout.count("rl: final checkpoint") == 1


RL_ARGS = [*overrides({k: v for k, v in TINY.items() if k in ("rl", "threads", "tensorboard", "save_every")}),
           "--rl.eval_every", "3", "--rl.extra_rewards", '["chars"]', "--rl.extra_reward_weights", "[0.5]"]
"a length reward: the tiny model's groups always differ in reward, so every step trains"
EQUAL_ARGS = [*RL_ARGS, "--rl.group_seeds", "true", "--rl.eval_every", "0", "--rl.monitor.enabled", "false"]
"each group sampled from its own generator; no periodic eval or monitor probe (their samplers are seeded per rank)"


@pytest.fixture(scope="module")
def rl_runs(dense_dcp, tmp_path_factory):
    """The same RL run (3 steps, checkpoints at 2 and 3, 4 prompts a step) in one process and as
    2 ranks of 2 prompts, under DDP and under FSDP2."""
    out = {}
    for name, extra in (("one", ["--rl.prompts_per_step", "4"]),
                        ("ddp", ["--rl.prompts_per_step", "2", "--nproc", "2"]),
                        ("fsdp2", ["--rl.prompts_per_step", "2", "--nproc", "2", "--dist.strategy", "fsdp2"])):
        run = tmp_path_factory.mktemp("rl") / name
        res = r1lab("rl", "--init", str(dense_dcp), *EQUAL_ARGS, *extra, "--out", str(run))
        assert res.returncode == 0, res.stderr[-3000:]
        out[name] = run
    return out


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_rl_with_two_processes_follows_one_process(rl_runs, strategy):
    """With rl.group_seeds, 2 ranks of 2 groups sample what 1 process of 4 groups samples (the same
    prompts, each group from its own generator), and every logged figure (rollout, reward, train,
    MoE) and the weights agree to float tolerance: advantages over the gathered rewards, the loss
    over the global token count, DDP's all-reduce or FSDP2's reduce-scatter (FSDP2 sampling from its
    gathered weights)."""
    one, two = (read_metrics(rl_runs[s] / "metrics.jsonl") for s in ("one", strategy))
    assert [r["step"] for r in two] == [1, 2, 3]
    assert all(r["train/grad_norm"] > 0 and r["rollout/zero_var_group_frac"] < 1 for r in one)  # a real update every step
    for a, b in zip(one, two):
        a, b = comparable(a), comparable(b)
        assert a.keys() == b.keys()
        for k in a:
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-6), k
    assert checkpoint.load_latest(rl_runs[strategy]).world_size == 2
    w_one, w_two = weights(rl_runs["one"]), weights(rl_runs[strategy])
    for k, v in w_one.items():
        torch.testing.assert_close(w_two[k], v, rtol=1e-4, atol=1e-6, msg=k)


@pytest.mark.slow
def test_rl_under_fsdp2_resumes_bit_identical(rl_runs, dense_dcp, tmp_path):
    """As after a kill -9 past step 2's checkpoint: the last checkpoint gone, --resume redoes step 3
    from the sharded step-2 checkpoint (weights, AdamW state, every rank's sampler RNG)."""
    run = tmp_path / "fsdp2"
    shutil.copytree(rl_runs["fsdp2"], run)
    shutil.rmtree(run / "checkpoints" / "step_3")
    res = r1lab("rl", "--init", str(dense_dcp), *EQUAL_ARGS, "--rl.prompts_per_step", "2", "--out", str(run), "--nproc", "2", "--dist.strategy", "fsdp2",
                "--resume")
    assert res.returncode == 0, res.stderr[-3000:]
    want, got = read_metrics(rl_runs["fsdp2"] / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    assert [comparable(r) for r in got] == [comparable(r) for r in want]
    for k, v in weights(rl_runs["fsdp2"]).items():
        assert torch.equal(weights(run)[k], v), k


@pytest.mark.slow
@pytest.mark.parametrize("signal", [True, False])
def test_dapo_dynamic_sampling_across_two_ranks(dense_dcp, tmp_path, signal):
    """DAPO under torchrun: each rank keeps its groups with signal, the ranks agree when all are full
    (with the length reward at once: every group differs), or sample up to the cap together and
    train on their last draw (the task reward alone: the tiny model solves nothing, no group has
    signal), with the draw counts summed over ranks. Process rewards (hybrid) ride along."""
    run = tmp_path / "dapo"
    args = RL_ARGS if signal else [a for a in RL_ARGS if a not in ('["chars"]', "[0.5]", "--rl.extra_rewards", "--rl.extra_reward_weights")]
    res = r1lab("rl", "--init", str(dense_dcp), *args, "--rl.steps", "2", "--rl.dynamic_sampling", "true", "--rl.max_sample_rounds", "2",
                "--rl.reward", "hybrid", "--out", str(run), "--nproc", "2", "--dist.strategy", "fsdp2")
    assert res.returncode == 0, res.stderr[-3000:]
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2] and all("reward/process_mean" in r for r in rows)
    B, world = TINY["rl"]["prompts_per_step"], 2
    for r in rows:
        if signal:  # one round: both ranks full at once; 4 groups drawn for 4 kept
            assert (r["rollout/sample_rounds"], r["rollout/groups_kept"], r["rollout/groups_drawn_per_kept"]) == (1, B * world, 1.0)
            assert r["rollout/zero_var_group_frac"] == 0
        else:  # the cap: 2 rounds of 2 groups on each rank, none kept
            assert (r["rollout/sample_rounds"], r["rollout/groups_kept"], r["rollout/groups_drawn_per_kept"]) == (2, 0, 2 * B * world)


@pytest.mark.slow
def test_eval_split_across_two_processes(dense_dcp, tmp_path):
    res = r1lab("eval", "--init", str(dense_dcp), *overrides({"eval": TINY["eval"], "threads": 1}), "--out", str(tmp_path), "--nproc", "2")
    assert res.returncode == 0, res.stderr[-3000:]
    (samples,) = tmp_path.glob("*.samples.jsonl")
    rows = samples.read_text().splitlines()
    assert len(rows) == TINY["eval"]["n_problems"] * TINY["eval"]["n_samples"]  # every problem once, gathered from both ranks
    assert len({json.loads(r)["question"] for r in rows}) == TINY["eval"]["n_problems"]
    assert res.stdout.count("eval: wrote") == 1


def _dapo_worker(rank: int, world: int, store: str, init: str, out: str) -> None:
    import random

    import torch.distributed as dist

    from r1lab import config as config_lib
    from r1lab.recipes import rl as rl_recipe
    from r1lab.tasks import get_task

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        cfg = config_lib.build(config_lib.parse_overrides([
            *overrides({k: v for k, v in TINY.items() if k in ("rl", "threads", "tensorboard")}), "--rl.steps", "1", "--rl.eval_every", "0",
            "--rl.monitor.enabled", "false", "--rl.dynamic_sampling", "true", "--rl.max_sample_rounds", "1",
            "--rl.extra_rewards", '["some"]', "--rl.extra_reward_weights", "[1.0]", "--init", init, "--out", out]))
        # The first draw's global prompts, as the recipe draws them: only prompts 0-2 earn a reward
        # that varies with the completion, so rank 0 (prompts 0, 2) fills up, rank 1 (1, 3) keeps one.
        task, rng = get_task(cfg.task, seed=cfg.seed), random.Random(cfg.seed)
        signal = {task.sample(rng, "train").question for _ in range(3)}
        rl_recipe.REWARDS["some"] = lambda text, ex: sum(map(ord, text)) % 97 / 97 if ex.question in signal else 0.0
        rl_recipe.main(cfg)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_dapo_ranks_short_of_groups_at_the_cap_top_up_and_stay_in_step(dense_dcp, tmp_path):
    """At the cap a rank with fewer groups than B tops up with masked degenerate groups, so both
    ranks run the same micro-batches (no hang) and the kept and drawn counts are summed."""
    import torch.multiprocessing as mp

    mp.spawn(_dapo_worker, args=(2, str(tmp_path / "store"), str(dense_dcp), str(tmp_path / "run")), nprocs=2)
    (row,) = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert (row["rollout/sample_rounds"], row["rollout/groups_kept"]) == (1, 3)
    assert row["rollout/groups_drawn_per_kept"] == pytest.approx(4 / 3)
    assert row["rollout/zero_var_group_frac"] == 0.25  # the filler group, trained on with its loss masked
    assert row["train/grad_norm"] > 0


def _group_worker(rank: int, world: int, store: str, results: dict) -> None:
    import torch.distributed as dist

    from r1lab.config import RLConfig
    from r1lab.recipes.rl import rank_advantages

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        G, B = 4, 3
        global_prompts = list(range(B * world))  # what every rank draws from the shared data RNG
        mine = global_prompts[rank::world]  # recipes/rl.py: whole prompts (groups) per rank
        rewards = torch.tensor([float((p * 7 + j) % 3) for p in mine for j in range(G)])  # (B*G,) rows of my groups
        out = {}
        for adv, scale in (("grpo", "group"), ("reinforce_pp", "batch")):
            a, all_r = rank_advantages(rewards, G, RLConfig(advantage=adv, scale_rewards=scale))
            out[adv] = (a, all_r)
        results[rank] = (mine, rewards, out)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_grpo_groups_stay_whole_on_one_rank(tmp_path):
    """Each rank's rows are whole groups of its own prompts; advantages computed per group over
    the gathered rewards equal one process's on the global batch (group and batch baselines)."""
    import torch.multiprocessing as mp

    from r1lab import rl

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_group_worker, args=(2, str(tmp_path / "store"), results), nprocs=2)
        results = dict(results)
    prompts = [results[r][0] for r in (0, 1)]
    assert sorted(prompts[0] + prompts[1]) == list(range(6)) and not set(prompts[0]) & set(prompts[1])
    for adv, scale in (("grpo", "group"), ("reinforce_pp", "batch")):
        all_r = results[0][2][adv][1]
        assert torch.equal(all_r, torch.cat([results[0][1], results[1][1]]))
        reference = rl.advantages(all_r, 4, adv, scale)
        assert torch.equal(torch.cat([results[0][2][adv][0], results[1][2][adv][0]]), reference)


def _rl_batch():
    """A fixed synthetic GRPO batch (4 groups of 4 rows) and a tiny MoE policy, the same in every process."""
    from r1lab import rl, rollout
    from r1lab.config import RLConfig

    torch.manual_seed(0)
    model = Transformer(ModelConfig(**{**MODEL, "max_seq_len": 32}), 40)
    N, P, T = 16, 6, 20
    tokens = torch.randint(0, 40, (N, T))
    lengths = torch.randint(3, T - P + 1, (N,))
    completion = (torch.arange(T)[None] >= P) & (torch.arange(T)[None] < P + lengths[:, None])  # (N, T)
    attention = torch.arange(T)[None] < P + lengths[:, None]
    old = torch.where(completion, -torch.rand(N, T) * 3, 0.0)
    ro = rollout.Rollout(tokens, attention, completion, old, P, torch.ones(N, dtype=torch.bool))
    r = RLConfig(group_size=4, aggregation="seq_mean_token_mean", micro_batch_size=4)
    adv = rl.advantages(torch.tensor([float(i % 3 == 0) for i in range(N)]), 4, "grpo", "group")  # (N,)
    return model, ro, r, adv


def _rl_grads(model, ro, r, adv, rows: torch.Tensor, strategy: str = "ddp") -> dict[str, torch.Tensor]:
    from r1lab import rollout
    from r1lab.recipes.rl import backward_minibatch, loss_settings

    sub = rollout.select(ro, rows)
    stats = dict.fromkeys(("clip_low", "clip_high", "kl", "ratio", "entropy", "tokens"), 0.0)
    wrapped = distributed.wrap(model, common.config_lib.DistConfig(strategy), torch.device("cpu"), find_unused=model.mtp is not None)  # as recipes/rl.py
    backward_minibatch(wrapped, sub, torch.arange(len(rows)),
                       sub.completion_mask, sub.logprobs, adv[rows], None, None, r, loss_settings(r), stats)
    # FSDP2's gradients are each rank's shard (DTensor): gather the full tensor to compare
    return {n: (p.grad.full_tensor() if strategy == "fsdp2" else p.grad).clone() for n, p in model.named_parameters() if p.grad is not None}


def _rl_worker(rank: int, world: int, store: str, strategy: str, results: dict) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        model, ro, r, adv = _rl_batch()
        groups = torch.arange(4)[rank::world]  # whole groups per rank, as recipes/rl.py keeps them
        rows = (groups[:, None] * 4 + torch.arange(4)).reshape(-1)
        results[rank] = _rl_grads(model, ro, r, adv, rows, strategy)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_rl_gradient_over_two_ranks_equals_one_process_on_the_same_rollouts(tmp_path, strategy):
    """Given the same rollouts, 2 ranks holding 2 groups each (micro-batches of 4 rows, the loss
    normalised by the global token and sequence counts) produce the one-process gradient: DDP's
    all-reduced mean, and FSDP2's reduce-scattered shards gathered back."""
    import torch.multiprocessing as mp

    with mp.Manager() as manager:
        results = manager.dict()
        mp.spawn(_rl_worker, args=(2, str(tmp_path / "store"), strategy, results), nprocs=2)
        results = dict(results)
    model, ro, r, adv = _rl_batch()
    reference = _rl_grads(model, ro, r, adv, torch.arange(16))
    for rank in (0, 1):
        assert results[rank].keys() == reference.keys()
        for k, g in reference.items():
            torch.testing.assert_close(results[rank][k], g, rtol=1e-5, atol=1e-7, msg=k)


@pytest.mark.slow
def test_gpu_benchmark_skips_without_cuda_and_runs_its_code_on_the_cpu():
    script = str(Path(__file__).parents[1] / "benchmarks" / "gpu.py")
    tiny = ["--steps", "1", "--batch", "1", "--seq", "64", "--d-model", "32", "--layers", "2", "--heads", "2", "--experts", "8",
            "--top-k", "2", "--d-expert", "8", "--vocab", "64", "--decode-batch", "2", "--decode-tokens", "4", "--grpo-rows", "8"]
    if not torch.cuda.is_available():
        res = subprocess.run([sys.executable, script], env=ENV, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and json.loads(res.stdout.splitlines()[-1])["skipped"] is True
    res = subprocess.run([sys.executable, script, "--smoke-cpu", *tiny], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    figures = json.loads(res.stdout.splitlines()[-1])
    assert figures["pretrain_tokens_per_s"] > 0 and figures["decode_tokens_per_s"] > 0 and figures["grpo_step_s"] > 0
