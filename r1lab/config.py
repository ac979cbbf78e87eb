"""Typed, strict configuration for every stage: dataclasses with defaults, YAML files, dotted
command-line overrides (``--rl.group_size 16``).

Every field has a one-line doc (the string under it) and a default taken from the paper it
implements or from what works for the tiny CPU recipe. Unknown keys, wrong types and impossible
values raise ``ConfigError`` naming the key; the CLI turns that into a one-line message and exit 2.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml


_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


class ConfigError(ValueError):
    """A bad config key or value; the message names the key."""


MAX_LAYERS = 1024
"model.n_layers above this is refused at once: building that many blocks, even to count their size, would hang"
MAX_SEQ_LEN = 2**20
"model.max_seq_len above this is refused at once (its RoPE tables alone would take GiBs); Qwen2.5-1M's 1,010,000 fits"


MAX_DRAWS = 10**8
"check.test_samples above this is refused at once: its draws are not kept, so no memory bound stops them, and 10^8 already take hours"


@dataclass
class ModelConfig:
    ffn: Literal["moe", "dense"] = "moe"
    "feed-forward type: DeepSeekMoE (shared + fine-grained routed experts) or a dense SwiGLU"
    d_model: int = 128
    "residual stream width"
    n_layers: int = 4
    "number of Transformer blocks"
    n_heads: int = 4
    "attention query heads"
    n_kv_heads: int = 4
    "key/value heads (grouped-query attention when fewer than n_heads)"
    max_seq_len: int = 128
    "longest sequence (prompt + completion) the model is built for"
    d_ff: int = 384
    "hidden width of the dense SwiGLU FFN (ffn: dense)"
    n_routed_experts: int = 8
    "routed experts per MoE layer (DeepSeekMoE fine-grained segmentation)"
    n_shared_experts: int = 1
    "always-active shared experts per MoE layer (DeepSeekMoE shared expert isolation)"
    top_k: int = 2
    "routed experts chosen per token"
    d_expert: int = 128
    "hidden width of each expert's SwiGLU"
    aux_loss_coef: float = 0.01
    "expert-level load-balance loss weight (DeepSeekMoE, arXiv:2401.06066, eq. 12); 0 disables it"
    rope_theta: float = 10000.0
    "RoPE base frequency"
    init_std: float = 0.02
    "std of the normal init of weights and (tied) embeddings; PyTorch's default 1.0 stalls tiny models"
    router: Literal["softmax", "sigmoid"] = "softmax"
    "expert affinities: DeepSeekMoE's softmax or DeepSeek-V3's sigmoid (arXiv:2412.19437, eq. 13-16)"
    norm_topk_prob: bool = True
    "renormalise the chosen top-k weights to sum to one (V2/V3); False keeps DeepSeekMoE eq. 5's raw softmax gates"
    routed_scaling_factor: float = 1.0
    "multiplier of the routed experts' gate weights (DeepSeek-V3: 2.5)"
    n_group: int = 1
    "expert groups for group-limited routing; 1 disables it (DeepSeek-V3: 8)"
    topk_group: int = 1
    "groups kept per token, chosen by the sum of each group's top-2 affinities (DeepSeek-V3: 4)"
    first_k_dense_replace: int = 0
    "the first k blocks use a dense SwiGLU of width d_ff instead of MoE (DeepSeek-V3: 3)"
    bias_update_speed: float = 0.0
    "aux-loss-free balancing gamma: per-expert selection bias step per optimizer step; 0 disables it (DeepSeek-V3: 0.001; needs router sigmoid)"
    bias_update_stop: int = 0
    "optimizer step after which gamma is 0 (DeepSeek-V3 stops it for the last 500B tokens); 0 never stops"
    seq_aux_loss_coef: float = 0.0
    "sequence-wise balance loss weight alpha (DeepSeek-V3, eq. 17-20: 1e-4); 0 disables it"
    attention: Literal["gqa", "mla"] = "gqa"
    "attention: grouped-query (n_kv_heads) or DeepSeek-V2/V3 multi-head latent attention with a compressed KV cache"
    kv_lora_rank: int = 32
    "MLA: width of the compressed KV latent that the cache stores (DeepSeek-V3: 512 for d_model 7168)"
    q_lora_rank: int = 0
    "MLA: width of the compressed query latent; 0 projects queries directly (DeepSeek-V3: 1536)"
    qk_nope_head_dim: int = 32
    "MLA: per-head query/key width without rotary positions (DeepSeek-V3: 128)"
    qk_rope_head_dim: int = 16
    "MLA: per-head width of the decoupled rotary query and the shared rotary key (DeepSeek-V3: 64)"
    v_head_dim: int = 32
    "MLA: per-head value width (DeepSeek-V3: 128)"
    mtp_depth: int = 0
    "multi-token prediction modules (DeepSeek-V3 sec. 2.2: 1); each predicts one token further ahead"
    mtp_loss_weight: float = 0.3
    "lambda, weight of the mean MTP loss (DeepSeek-V3: 0.3, later 0.1)"
    qkv_bias: bool = False
    "biases on the query/key/value projections (Qwen2 has them; LLaMA and DeepSeek do not)"
    tie_embeddings: bool = True
    "share the input embedding with the output head (tiny models); False gives a separate lm_head as most LLaMA checkpoints have"
    norm_eps: float = 1e-6
    "epsilon of every RMSNorm (LLaMA-2 uses 1e-5, Qwen2 and DeepSeek 1e-6)"
    rope_scaling: Literal["none", "linear", "llama3"] = "none"
    "RoPE frequency scaling, as Hugging Face's rope_type: none, linear position interpolation (arXiv:2306.15595), Llama 3.1's per-band (llama3)"
    rope_factor: float = 1.0
    "RoPE scaling factor: low frequencies are divided by it (linear: all; Llama 3.1: 8)"
    rope_low_freq_factor: float = 1.0
    "llama3 RoPE: wavelengths longer than rope_original_max_len / this are divided by rope_factor (Llama 3.1: 1)"
    rope_high_freq_factor: float = 4.0
    "llama3 RoPE: wavelengths shorter than rope_original_max_len / this are kept; those between are blended (Llama 3.1: 4)"
    rope_original_max_len: int = 8192
    "llama3 RoPE: the pretraining context length the bands are measured against (Llama 3.1: 8192)"


@dataclass
class SampleConfig:
    temperature: float = 1.0
    "softmax temperature of sampling (R1 uses 1.0 for RL rollouts); 0 is greedy decoding (eval and sample only)"
    top_p: float = 1.0
    "nucleus sampling mass; 1.0 keeps the full distribution"
    max_new_tokens: int = 64
    "completion length cap in tokens"
    compile: bool = False
    "decode through a torch.compile'd step over a fixed-width KV cache (GQA, dense FFN; else eager): compiled once per batch shape (tens of seconds on a CPU), other float rounding than eager; every row decodes until all end, prompts are not shared"


@dataclass
class PretrainConfig:
    steps: int = 1800
    "optimizer steps (1800 x 24 rows: worked solutions reach ~90% accuracy on chain)"
    batch_size: int = 24
    "rows per step, each model.max_seq_len tokens packed with whole documents"
    lr: float = 3e-3
    "peak AdamW learning rate"
    min_lr_ratio: float = 0.1
    "final learning rate as a fraction of the peak (cosine decay)"
    warmup_steps: int = 50
    "linear warm-up steps"
    weight_decay: float = 0.1
    "AdamW weight decay on matrices"
    grad_clip: float = 1.0
    "global gradient-norm clip; 0 disables it"
    worked_fraction: float = 0.3
    "fraction of question/answer documents with a worked solution in <think>; the rest answer directly"


@dataclass
class MonitorConfig:
    enabled: bool = True
    "watch every RL run for reward hacking (r1lab.monitor): it only observes, the training numbers stay the same"
    probe_every: int = 10
    "sample the held-out probe set every N RL steps (and at the last); 0: no probe, only the training batches are watched"
    probe_problems: int = 32
    "held-out (test split) problems in the probe, one sample each with the rollout sampling, its own seeded generator"
    probe_seed: int = 7
    "seed of the probe's problems and sampling stream (the same problems and stream at every probe: common random numbers)"
    probe_window: int = 4
    "probe points in the proxy-vs-verified trend test"
    window: int = 20
    "RL steps in each batch-level trend window (and in the baseline an exploit shape is compared with)"
    reward_rise: float = 0.05
    "proxy reward counts as rising when its least-squares line gains this much over the window"
    accuracy_fall: float = 0.1
    "verified accuracy counts as falling when its least-squares line loses this much over the window"
    shape_rate: float = 0.5
    "an exploit shape is flagged when at least this fraction of a window's completions show it ..."
    shape_rise: float = 0.25
    "... and that fraction rose by at least this much above the run's first window"
    length_rise: float = 0.5
    "length gaming: mean completion length up by this fraction over the window while verified accuracy does not rise"
    repeat_min: int = 4
    "a completion is repetitive when a unit of text repeats this many times in a row (covering >= 16 characters) or a line recurs this often"


@dataclass
class RLConfig:
    steps: int = 80
    "GRPO steps (one batch of rollouts, one optimizer update each)"
    prompts_per_step: int = 16
    "distinct prompts per step (B)"
    group_size: int = 8
    "completions per prompt (G); GRPO's baseline is the group mean"
    lr: float = 1e-4
    "AdamW learning rate (constant after warm-up); 1e-3 collapsed the tiny policy within 40 steps"
    warmup_steps: int = 5
    "linear warm-up steps"
    weight_decay: float = 0.0
    "AdamW weight decay"
    grad_clip: float = 1.0
    "global gradient-norm clip; 0 disables it"
    clip_eps: float = 0.2
    "PPO/GRPO ratio clip epsilon (DeepSeekMath, arXiv:2402.03300, eq. 3)"
    kl_coef: float = 0.0
    "weight of the k3 KL estimator to the frozen reference policy; 0 drops the reference model"
    updates_per_batch: int = 1
    "passes over each rollout batch (GRPO's mu, arXiv:2402.03300 alg. 1); >1 makes the clip matter"
    advantage: Literal["grpo", "dr_grpo", "rloo", "reinforce_pp"] = "grpo"
    "baseline: group mean (grpo, dr_grpo: arXiv:2503.20783), leave-one-out (rloo: arXiv:2402.14740), batch mean (reinforce_pp: arXiv:2501.03262)"
    scale_rewards: Literal["group", "batch", "none"] = "group"
    "divide advantages by the reward std of the group (GRPO), of the batch (REINFORCE++), or not at all (Dr. GRPO)"
    loss_type: Literal["ppo", "gspo", "cispo", "sapo"] = "ppo"
    "surrogate: PPO clip (GRPO/DAPO), GSPO sequence ratio (arXiv:2507.18071), CISPO clipped IS weight (arXiv:2506.13585), SAPO soft gate (arXiv:2511.20347)"
    clip_eps_high: float = 0.0
    "upper clip epsilon (DAPO clip-higher: 0.28, arXiv:2503.14476); 0 uses clip_eps (symmetric)"
    dual_clip: float = 0.0
    "dual-clip constant c > 1 bounding the loss of A < 0 tokens at -c A (arXiv:1912.09729 uses 3); 0 disables it"
    sapo_tau_pos: float = 1.0
    "SAPO gate temperature for positive advantages (TRL's default)"
    sapo_tau_neg: float = 1.05
    "SAPO gate temperature for negative advantages (TRL's default)"
    aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] = "token_mean"
    "loss over tokens: all tokens of the batch (DAPO), per sequence then batch (GRPO), sequence sums over max_new_tokens (Dr. GRPO)"
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    "KL estimator to the reference (k3: GRPO's, unbiased and non-negative)"
    kl_in_reward: bool = False
    "subtract kl_coef x the completion's summed KL from its reward (PPO-RLHF style) instead of adding a loss term"
    entropy_coef: float = 0.0
    "entropy bonus weight (0: none, as in GRPO and DAPO)"
    mini_batches: int = 1
    "optimizer steps per pass over the rollout batch: whole groups split into this many shuffled mini-batches (at most one per group)"
    micro_batch_size: int = 0
    "sequences per forward/backward (gradient accumulation within a mini-batch); 0 = the whole mini-batch at once"
    tis_cap: float = 0.0
    "truncated importance sampling: weight tokens by min(pi_trainer / pi_sampler, cap) (Yao et al. 2025); 0 disables it"
    dynamic_sampling: bool = False
    "DAPO dynamic sampling: redraw until prompts_per_step groups with unequal rewards are kept"
    max_sample_rounds: int = 4
    "dynamic sampling: at most this many draws of prompts_per_step prompts per step; then train on what was kept"
    group_seeds: bool = False
    "draw each group's tokens from its own generator seeded by (seed, step, round, prompt index), so that N processes sample what one does (r1lab's own; off: one stream per rank)"
    overlong: Literal["none", "mask", "soft"] = "none"
    "truncated completions: keep (none), drop from the loss (mask: DAPO overlong filtering), or DAPO's soft length penalty"
    overlong_buffer: int = 0
    "soft overlong penalty's buffer L_cache in tokens (DAPO: 4096 of 20480); 0 = a fifth of max_new_tokens"
    overlong_weight: float = 1.0
    "weight of the soft overlong penalty in the reward"
    extra_rewards: list[str] = field(default_factory=list)
    "extra reward functions by name (r1lab.recipes.rl.REWARDS), added to format and correctness"
    extra_reward_weights: list[float] = field(default_factory=list)
    "one weight per extra reward function"
    format_weight: float = 0.1
    "weight of the format reward (R1 template followed)"
    correct_weight: float = 1.0
    "weight of the correctness reward"
    partial_weight: float = 0.0
    "weight of a task's graded partial credit (reasoning-gym's score_answer); 0: off, as in R1; never counted as correct"
    eval_every: int = 20
    "evaluate pass@1 on held-out problems every N steps (0 disables it); shows RL's progress"
    eval_problems: int = 100
    "held-out problems in each periodic evaluation (2 samples each)"
    sample: SampleConfig = field(default_factory=SampleConfig)
    "rollout sampling"
    logprob_chunk: int = 0
    "trainer log-probs this many tokens at a time (memory O(chunk x vocab), for 32k-152k vocabularies); 0 builds the full (tokens, vocab) logits"
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    "reward-hacking monitor (on by default; observes only)"
    reward: Literal["outcome", "process", "hybrid"] = "outcome"
    "advantages from the outcome reward (R1), from step rewards (process supervision, DeepSeekMath sec. 4.1.3), or a weighted sum of both"
    process_weight: float = 0.5
    "hybrid: advantage = process_weight x process advantage + (1 - process_weight) x outcome advantage"
    prm: str = ""
    "process reward model (an `r1lab prm train` run or checkpoint folder) scoring each step; empty: the task's exact step checks (an oracle PRM, steps cut at prm.marker)"
    pack: bool = True
    "trainer passes on the rows' real tokens packed end to end into dense rows (block-diagonal attention): no FLOPs on padding, the same log-probs up to float rounding; False pads every row to the batch's width"
    share_prompt: bool = True
    "with pack: rows with the same prompt (a group) share one copy of it in the trainer's pass, each completion attending to it and to itself: the prompt runs once, not G times; same log-probs and gradients"


@dataclass
class EvalConfig:
    split: Literal["test", "train"] = "test"
    "which task split to evaluate on"
    n_problems: int = 200
    "distinct problems"
    n_samples: int = 8
    "samples per problem (n of the unbiased pass@k estimator)"
    ks: list[int] = field(default_factory=lambda: [1, 8])
    "k values for pass@k and maj@k; each <= n_samples"
    seed: int = 1234
    "seed of problem selection and sampling (fixed so that base and RL see the same problems)"
    sample: SampleConfig = field(default_factory=SampleConfig)
    "evaluation sampling"
    rerank: str = ""
    "best-of-N reranking beside pass@k: prm:PATH or orm:PATH (a `r1lab prm train` run) picks the best-scored of k samples (rerank@k); empty: off"
    rerank_aggregate: Literal["min", "product", "last"] = "min"
    "a completion's score from its step scores and answer-step score: min (Math-Shepherd), product (Lightman et al. 2023) or last (the answer step)"


@dataclass
class R1Config:
    cold_start_examples: int = 256
    "cold-start SFT set: this many distinct train-split problems with the task's worked solution (DeepSeek-R1 sec. 2.3.1: thousands)"
    cold_start_data: str = ""
    "cold-start records from a file instead (as sft.data: {prompt, completion} or {question, answer[, solution]}); for tasks without worked solutions"
    cold_start_steps: int = 60
    "SFT steps on the cold-start set (learning rate and batch from sft.*)"
    rl1_steps: int = 40
    "GRPO steps of the first, reasoning-oriented RL stage (other RL settings from rl.*)"
    sft2_steps: int = 60
    "SFT steps on the rejection-sampled set (DeepSeek-R1 sec. 2.3.3: two epochs)"
    sft2_from: Literal["base", "rl1"] = "base"
    "model the second SFT starts from: the pretrained base (DeepSeek-R1 fine-tunes V3-Base again) or the first RL stage's policy"
    rl2_steps: int = 40
    "GRPO steps of the second RL stage (rl1_steps + rl2_steps = zero's rl.steps, for a fair comparison)"


@dataclass
class GenerateConfig:
    questions: list[str] = field(default_factory=list)
    "questions to answer (`r1lab sample` takes them as positional arguments); empty: held-out problems"
    n: int = 4
    "completions per question"
    speculative: bool = False
    "draft each next token with the model's MTP module and verify it (self-speculative decoding, exact); needs model.mtp_depth 1"
    sample: SampleConfig = field(default_factory=lambda: SampleConfig(temperature=0.7))
    "sampling of `r1lab sample`"


@dataclass
class CheckConfig:
    train_samples: int = 30000
    "train-split draws compared with the test problems (`r1lab check-task`)"
    test_samples: int = 5000
    "test-split draws (plus the evaluation's own eval.n_problems problems); finite pools are covered almost entirely"
    corpus_steps: int = 0
    "pretraining steps whose documents are checked; 0: all pretrain.steps, the whole corpus of that run"


@dataclass
class LabelConfig:
    source: str = ""
    "`--from`: a run folder (its eval/*.samples.jsonl) or a JSONL of traces {question, completion or steps[, gold, task, id]}"
    n_traces: int = 50
    "traces drawn (seeded by `seed`) from a run folder's evaluation samples"
    host: str = "127.0.0.1"
    "`--host`: address to serve on; anything but loopback requires a token"
    port: int = 8765
    "`--port`: TCP port of the labelling page (0: any free port)"
    token: str = ""
    "`--token`: secret the page must present (?token=...); empty: none on loopback, a random one printed elsewhere"
    agreement: list[str] = field(default_factory=list)
    "`--agreement A B`: print Cohen's kappa of two label files (and agreement with exact step checks) instead of serving"


@dataclass
class PRMConfig:
    action: Literal["label", "train", "eval"] = "label"
    "what `r1lab prm ACTION` does: label steps by rollouts, train a reward model, evaluate one against exact labels"
    data: str = ""
    "step-labelled JSONL written by `r1lab prm label` (train: the training set; eval: the held-out set)"
    split: Literal["train", "test"] = "train"
    "task split whose problems `prm label` samples (train for training data, test for held-out evaluation data)"
    n_problems: int = 32
    "distinct problems `prm label` samples traces for"
    traces_per_problem: int = 4
    "completions sampled from the policy per problem, each labelled step by step"
    rollouts: int = 8
    "Math-Shepherd N: completions rolled out from each step prefix (the paper uses 8); 0 writes exact labels only"
    marker: str = ""
    "step separator inside <think>; empty: one step per line"
    labels: Literal["hard", "soft", "exact"] = "hard"
    "PRM training target: hard (any rollout correct, Math-Shepherd's HE), soft (the fraction, its SE), or exact (Task.step_checks, an oracle)"
    kind: Literal["prm", "orm"] = "prm"
    "prm: a label at every step end and at the answer; orm: only final correctness at the completion's last token"
    steps: int = 200
    "optimizer steps of `prm train`"
    batch_size: int = 16
    "labelled completions per training step, drawn at random (without replacement within a step)"
    lr: float = 1e-4
    "peak AdamW learning rate (Math-Shepherd trains its PRM from the policy at 1e-6 to 2e-6; tiny models need more)"
    warmup_steps: int = 10
    "linear warm-up steps, then cosine decay to a tenth"
    weight_decay: float = 0.0
    "AdamW weight decay on matrices"
    grad_clip: float = 1.0
    "global gradient-norm clip; 0 disables it"
    threshold: float = 0.5
    "`prm eval`: a step is predicted right when its score is at least this"
    sample: SampleConfig = field(default_factory=SampleConfig)
    "sampling of the traces and of the rollouts from each step (`prm label`)"


@dataclass
class ExportConfig:
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    "dtype of the exported weights (r1lab trains in float32; bfloat16 halves the folder and is exact for weights imported from bfloat16)"
    mtp: bool = False
    "keep a DeepseekV3 export's MTP module as DeepSeek's checkpoints do (layer model.layers.{n_layers}, which transformers does not load); False drops it"


@dataclass
class LoRAConfig:
    rank: int = 0
    "rank r of the low-rank adapters (LoRA, arXiv:2106.09685); 0 trains every weight instead"
    alpha: float = 16.0
    "adapter scale numerator: the update is (alpha / rank) B A"
    targets: list[str] = field(default_factory=lambda: ["wq", "wv"])
    "linear layers that get adapters (wq wk wv wo: attention, w1 w2 w3: dense FFN); the paper's choice is wq and wv"


@dataclass
class SFTConfig:
    data: str = ""
    "records: jsonl:PATH or a .jsonl/.json/.csv/.parquet file (read by `datasets`); rows {prompt, completion} or {question, answer[, solution]}, rendered in the R1 template"
    steps: int = 100
    "optimizer steps"
    batch_size: int = 8
    "rows per step, each up to model.max_seq_len tokens (with packing: several whole documents per row)"
    packing: bool = True
    "pack whole documents into rows with block-diagonal attention (no attention across documents); False pads one per row"
    lr: float = 1e-3
    "peak AdamW learning rate"
    min_lr_ratio: float = 0.1
    "final learning rate as a fraction of the peak (cosine decay)"
    warmup_steps: int = 5
    "linear warm-up steps"
    weight_decay: float = 0.0
    "AdamW weight decay on matrices"
    grad_clip: float = 1.0
    "global gradient-norm clip; 0 disables it"
    val_fraction: float = 0.05
    "share of distinct prompts held out for the validation loss (at least one when > 0); 0 disables it"
    eval_every: int = 20
    "validation loss on the held-out slice every N steps and at the end (0: never)"


@dataclass
class RejectionConfig:
    n_prompts: int = 64
    "distinct train-split prompts to sample from"
    samples_per_prompt: int = 8
    "completions drawn per prompt (n)"
    max_per_prompt: int = 4
    "distinct accepted completions kept per prompt (0: all)"
    prompts_per_batch: int = 16
    "prompts sampled together (memory/speed trade-off only)"
    sample: SampleConfig = field(default_factory=SampleConfig)
    "sampling of the candidates (R1 samples at temperature 1 from the RL checkpoint)"


@dataclass
class DistillConfig:
    teacher: str = ""
    "the teacher: a run or checkpoint folder, or hf:PATH"
    mode: Literal["sequence", "token"] = "sequence"
    "sequence: SFT on the teacher's verified samples (DeepSeek-R1's distillation); token: KL to the teacher's logits"
    kl: Literal["forward", "reverse"] = "forward"
    "token mode: KL(teacher || student) (forward, word-level KD) or KL(student || teacher) (reverse, MiniLLM)"
    top_k: int = 0
    "token mode: renormalise both distributions over the teacher's top-k tokens; 0: the full vocabulary"
    temperature: float = 1.0
    "token mode: softmax temperature of both distributions (loss scaled by its square, Hinton et al.)"
    data: str = ""
    "token mode: SFT records whose completions carry the loss (as sft.data); empty: fresh teacher samples on train prompts each step"
    steps: int = 100
    "token mode: optimizer steps (sequence mode uses sft.steps)"
    prompts_per_step: int = 8
    "token mode without data: prompts sampled by the teacher per step (with data: sft.batch_size rows)"
    lr: float = 1e-3
    "token mode: peak AdamW learning rate (cosine decay to sft.min_lr_ratio, warm-up sft.warmup_steps)"
    sample: SampleConfig = field(default_factory=SampleConfig)
    "token mode: teacher sampling"


@dataclass
class DataConfig:
    prompts: Literal["uniform", "curriculum", "pass_rate"] = "uniform"
    "RL's training prompts: uniform over the train split (R1), a reasoning-gym difficulty curriculum, or pass-rate curation"
    level_up: float = 0.7
    "curriculum: one level up when the mean train correct rate of the last data.window steps reaches this"
    level_down: float = 0.1
    "curriculum: one level down when that rate falls to this (r1lab's addition: a too-hard level does not stall)"
    window: int = 5
    "curriculum: RL steps whose correct rates decide a move; it restarts after each move"
    start_level: int = 0
    "curriculum: the first level (0: the dataset's easiest)"
    band_low: float = 0.05
    "pass-rate curation: keep prompts whose estimated pass rate is at least this (0.05 with 8 samples: solved at least once)"
    band_high: float = 0.95
    "pass-rate curation: and at most this (0.95 with 8 samples: failed at least once; DAPO and Kimi k1.5 drop always-solved prompts)"
    candidates: int = 64
    "pass-rate curation: train prompts whose pass rate is estimated at each refresh"
    samples: int = 8
    "samples per prompt of every pass-rate estimate (curation, r1lab curate, the signal check)"
    refresh_every: int = 20
    "pass-rate curation: re-estimate the pool under the current policy every N RL steps (its cost is logged)"
    signal_problems: int = 32
    "train problems on which `r1lab zero` estimates the base's pass@k before RL (0: skip it)"
    signal_threshold: float = 0.1
    "warn that RL has little to select when the base's train pass@8 (data.samples tries) is below this"
    signal_check: bool = False
    "`r1lab rl`: run the same pre-RL signal check (`r1lab zero` always does, unless data.signal_problems is 0)"
    curate_problems: int = 200
    "`r1lab curate`: train problems whose pass rates are estimated (a finite pool is capped at its size)"


@dataclass
class DistConfig:
    strategy: Literal["ddp", "fsdp2"] = "ddp"
    "data parallelism under torchrun: DDP (replicated weights) or FSDP2 fully_shard (weights, gradients, optimizer state sharded); ignored in one process"


@dataclass
class JanusConfig:
    vq_steps: int = 600
    "VQ-VAE training steps (the generation path's image tokenizer; van den Oord 2017)"
    vq_batch_size: int = 32
    "images per VQ-VAE step"
    vq_lr: float = 2e-3
    "Adam learning rate of the VQ-VAE"
    vq_codebook: int = 256
    "codebook entries K (Janus/LlamaGen: 16384); the image vocabulary of the generation head"
    vq_dim: int = 16
    "code vector width (LlamaGen: 8)"
    vq_channels: int = 64
    "conv channels of the VQ-VAE encoder and decoder"
    vq_beta: float = 0.25
    "commitment loss weight beta (van den Oord 2017: 0.25)"
    vq_decay: float = 0.99
    "EMA decay of the codebook (van den Oord 2017, appendix A.1: 0.99)"
    enc_dim: int = 64
    "width of the understanding encoder, a patch transformer in SigLIP's role"
    enc_layers: int = 2
    "blocks of the understanding encoder"
    enc_pixel_mean: float = 0.0
    "the understanding encoder reads (x - mean) / std; 0: a black pixel is 0 (SigLIP: 0.5, i.e. 2x - 1, which drowned the small coloured shapes of a scene in its black background)"
    enc_pixel_std: float = 0.25
    "pixel scale of the understanding encoder's input (x - mean) / std: 0.25 reads x as 4x (SigLIP: 0.5); measured best of 1, 0.25 and standardised in docs/janus.md"
    enc_patch: int = 8
    "pixels per side of an understanding patch (8: 16 patches of a 32x32 image; 4: 64, as many as VQ codes); divides 32"
    und_pos: bool = False
    "add a learned position embedding per patch to the image features in the LM's space (as the generation path's code positions)"
    align_steps: int = 150
    "stage I: only the encoder, adaptors, image embedding and image head train; the LM is frozen (Janus sec. 3.2)"
    unified_steps: int = 1200
    "stage II: unified training of everything on text, captioning and text-to-image data"
    instruct_steps: int = 600
    "stage III: instruction-style tuning: questions with answers in the R1 template, prompts to draw, text"
    batch_size: int = 24
    "sequences per step of every stage"
    lr: float = 2e-3
    "peak AdamW learning rate of the three stages (cosine decay within each)"
    warmup_steps: int = 30
    "linear warm-up steps of each stage"
    text_weight: float = 0.1
    "share of text-only sequences (the task's documents) in stages II and III (Janus stage III: 1 in 10)"
    gen_weight: float = 0.45
    "share of text-to-image sequences (Janus stage III: 4 in 10); the rest are understanding"
    digit_fraction: float = 0.3
    "share of images that are sklearn digits; the rest are procedural scenes"
    cfg_dropout: float = 0.1
    "probability that a generation prompt is replaced by pad tokens in training (Janus: 10%), for classifier-free guidance"
    unified_qa: float = 0.5
    "share of stage II's understanding sequences that are questions with exact answers, the rest captions (Janus: captions only; from scratch the questions need the steps)"
    cfg_scale: float = 3.0
    "classifier-free guidance scale at sampling (Janus: 5); 1 is the plain conditional model"
    eval_questions: int = 200
    "held-out understanding questions (test-split scenes and digits)"
    eval_prompts: int = 100
    "held-out scene prompts to draw (plus the ten digit prompts)"
    eval_samples: int = 4
    "samples per question (n of pass@k, temperature eval.sample.temperature)"
    image_temperature: float = 1.0
    "sampling temperature of image codes"
    und_input: Literal["encoder", "vq"] = "encoder"
    "what understanding reads: the patch encoder (Janus's decoupled encoding) or the VQ codes via the generation embedding (one shared encoding)"


@dataclass
class Config:
    task: str = "chain"
    "task name (see r1lab.tasks.TASKS), gym:<reasoning-gym dataset>, or jsonl:<path> (rows {\"question\", \"answer\"[, \"solution\"]})"
    out: str = ""
    "run folder; empty means runs/<stage>-<time>"
    init: str = ""
    "run or checkpoint folder to start from (rl, eval, sample, export), or hf:PATH for a local Hugging Face folder (Llama, Qwen2); empty for a fresh model"
    seed: int = 0
    "seed of every RNG"
    threads: int = 2
    "torch intra-op threads: 2 is ~2x faster than 1 on an idle 2-core machine (benchmarks/threads.py); use 1 when another busy process shares the cores"
    resume: bool = False
    "continue the run in `out` from its last good checkpoint"
    save_every: int = 50
    "checkpoint every N optimizer steps (and at the end)"
    keep_checkpoints: int = 2
    "how many recent checkpoints to keep"
    max_bad_steps: int = 3
    "a step whose loss or gradient is NaN or infinite is skipped (no update) and reported; this many in a row stop the run (exit 3), its last good checkpoint intact"
    log_every: int = 10
    "print a progress line every N steps"
    tensorboard: bool = True
    "also write TensorBoard event files"
    model: ModelConfig = field(default_factory=ModelConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    r1: R1Config = field(default_factory=R1Config)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    label: LabelConfig = field(default_factory=LabelConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    rejection: RejectionConfig = field(default_factory=RejectionConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prm: PRMConfig = field(default_factory=PRMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    "where pretraining, RL and evaluation run: auto takes this rank's GPU when CUDA is available (bf16 autocast in pretraining), else the CPU"
    dist: DistConfig = field(default_factory=DistConfig)
    "torchrun data parallelism (r1lab <stage> --nproc N, docs/distributed.md)"
    janus: JanusConfig = field(default_factory=JanusConfig)
    "r1lab janus: the unified understanding + generation model (Janus, arXiv:2410.13848)"

    def validate(self) -> Config:
        """Raise ConfigError naming the first impossible value; return self."""
        m, p, r, e = self.model, self.pretrain, self.rl, self.eval
        checks = [
            ("model.d_model", m.d_model > 0 and m.n_heads > 0 and m.d_model % m.n_heads == 0, "must be a positive multiple of model.n_heads"),
            ("model.n_heads", m.n_heads > 0 and (m.attention == "mla" or m.n_heads % max(m.n_kv_heads, 1) == 0), "must be a positive multiple of model.n_kv_heads"),
            ("model.n_kv_heads", m.n_kv_heads > 0, "must be positive"),
            ("model.n_layers", 0 < m.n_layers <= MAX_LAYERS, f"must be between 1 and {MAX_LAYERS:,}"),
            ("model.d_ff", m.d_ff > 0, "must be positive"),
            ("model.d_expert", m.d_expert > 0, "must be positive"),
            ("model.top_k", 1 <= m.top_k <= m.n_routed_experts, f"must be between 1 and model.n_routed_experts ({m.n_routed_experts})"),
            ("model.n_shared_experts", m.n_shared_experts >= 0, "must be >= 0"),
            ("model.max_seq_len", 8 <= m.max_seq_len <= MAX_SEQ_LEN, f"must be between 8 and {MAX_SEQ_LEN:,}"),
            ("model.init_std", m.init_std > 0, "must be positive"),
            ("model.n_group", m.n_group >= 1 and m.n_routed_experts % m.n_group == 0, f"must divide model.n_routed_experts ({m.n_routed_experts})"),
            ("model.topk_group", 1 <= m.topk_group <= m.n_group and m.topk_group * (m.n_routed_experts // max(m.n_group, 1)) >= m.top_k, "must be in [1, model.n_group] and keep at least model.top_k experts eligible"),
            ("model.routed_scaling_factor", m.routed_scaling_factor > 0, "must be positive"),
            ("model.first_k_dense_replace", 0 <= m.first_k_dense_replace <= m.n_layers, "must be in [0, model.n_layers]"),
            ("model.bias_update_speed", m.bias_update_speed >= 0 and (m.bias_update_speed == 0 or m.router == "sigmoid"), "must be >= 0, and > 0 only with model.router sigmoid"),
            ("model.bias_update_stop", m.bias_update_stop >= 0, "must be >= 0"),
            ("model.seq_aux_loss_coef", m.seq_aux_loss_coef >= 0, "must be >= 0"),
            ("model.kv_lora_rank", m.kv_lora_rank > 0, "must be positive"),
            ("model.q_lora_rank", m.q_lora_rank >= 0, "must be >= 0"),
            ("model.qk_rope_head_dim", m.qk_rope_head_dim > 0 and m.qk_rope_head_dim % 2 == 0, "must be a positive even number"),
            ("model.qk_nope_head_dim", m.qk_nope_head_dim > 0, "must be positive"),
            ("model.v_head_dim", m.v_head_dim > 0, "must be positive"),
            ("model.rope_factor", m.rope_factor >= 1.0, "must be >= 1 (1: no scaling)"),
            ("model.rope_high_freq_factor", m.rope_scaling != "llama3" or m.rope_high_freq_factor > m.rope_low_freq_factor > 0,
             "must exceed model.rope_low_freq_factor, which must be positive"),
            ("model.rope_original_max_len", m.rope_original_max_len > 0, "must be positive"),
            ("model.mtp_depth", m.mtp_depth in (0, 1), "must be 0 or 1"),
            ("model.mtp_loss_weight", m.mtp_loss_weight >= 0, "must be >= 0"),
            ("pretrain.lr", p.lr > 0, "must be positive"),
            ("pretrain.batch_size", p.batch_size > 0, "must be positive"),
            ("pretrain.steps", p.steps >= 0, "must be >= 0"),
            ("pretrain.worked_fraction", 0.0 <= p.worked_fraction <= 1.0, "must be in [0, 1]"),
            ("rl.group_size", r.group_size >= 2, "must be >= 2: GRPO's baseline is the mean of the group"),
            ("rl.prompts_per_step", r.prompts_per_step >= 1, "must be >= 1"),
            ("rl.lr", r.lr > 0, "must be positive"),
            ("rl.steps", r.steps >= 0, "must be >= 0"),
            ("rl.clip_eps", r.clip_eps > 0, "must be positive"),
            ("rl.kl_coef", r.kl_coef >= 0, "must be >= 0"),
            ("rl.updates_per_batch", r.updates_per_batch >= 1, "must be >= 1"),
            ("rl.scale_rewards", r.advantage != "dr_grpo" or r.scale_rewards == "none", "must be none with rl.advantage dr_grpo (Dr. GRPO drops the std division)"),
            ("rl.clip_eps_high", r.clip_eps_high >= 0, "must be >= 0"),
            ("rl.dual_clip", r.dual_clip == 0 or r.dual_clip > 1, "must be 0 (off) or > 1"),
            ("rl.sapo_tau_pos", r.sapo_tau_pos > 0, "must be positive"),
            ("rl.sapo_tau_neg", r.sapo_tau_neg > 0, "must be positive"),
            ("rl.entropy_coef", r.entropy_coef >= 0, "must be >= 0"),
            ("rl.mini_batches", r.mini_batches >= 1, "must be >= 1"),
            ("rl.micro_batch_size", r.micro_batch_size >= 0, "must be >= 0"),
            ("rl.tis_cap", r.tis_cap == 0 or r.tis_cap >= 1, "must be 0 (off) or >= 1"),
            ("rl.max_sample_rounds", r.max_sample_rounds >= 1, "must be >= 1"),
            ("rl.overlong_buffer", 0 <= r.overlong_buffer < r.sample.max_new_tokens, f"must be in [0, rl.sample.max_new_tokens ({r.sample.max_new_tokens}))"),
            ("rl.kl_in_reward", not r.kl_in_reward or r.kl_coef > 0, "needs rl.kl_coef > 0"),
            ("rl.extra_reward_weights", len(r.extra_reward_weights) == len(r.extra_rewards), "needs one weight per name in rl.extra_rewards"),
            ("rl.eval_every", r.eval_every >= 0, "must be >= 0"),
            ("rl.eval_problems", r.eval_problems >= 1, "must be >= 1"),
            ("rl.logprob_chunk", r.logprob_chunk >= 0, "must be >= 0 (0: no chunking)"),
            ("rl.process_weight", 0.0 <= r.process_weight <= 1.0, "must be in [0, 1]"),
            ("rl.monitor.probe_every", r.monitor.probe_every >= 0, "must be >= 0 (0: no probe)"),
            ("rl.monitor.probe_problems", r.monitor.probe_problems >= 1, "must be >= 1"),
            ("rl.monitor.probe_window", r.monitor.probe_window >= 2, "must be >= 2 (a trend needs two points)"),
            ("rl.monitor.window", r.monitor.window >= 2, "must be >= 2 (a trend needs two points)"),
            ("rl.monitor.reward_rise", r.monitor.reward_rise > 0, "must be positive"),
            ("rl.monitor.accuracy_fall", r.monitor.accuracy_fall > 0, "must be positive"),
            ("rl.monitor.shape_rate", 0 < r.monitor.shape_rate <= 1, "must be in (0, 1]"),
            ("rl.monitor.shape_rise", 0 < r.monitor.shape_rise <= 1, "must be in (0, 1]"),
            ("rl.monitor.length_rise", r.monitor.length_rise > 0, "must be positive"),
            ("rl.monitor.repeat_min", r.monitor.repeat_min >= 2, "must be >= 2"),
            ("lora.rank", self.lora.rank >= 0, "must be >= 0 (0: no LoRA)"),
            ("lora.targets", self.lora.rank == 0 or (bool(self.lora.targets) and set(self.lora.targets) <= {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}),
             "must be a non-empty list of wq, wk, wv, wo, w1, w2, w3"),
            ("generate.n", self.generate.n >= 1, "must be >= 1"),
            ("check.train_samples", self.check.train_samples >= 1, "must be >= 1"),
            ("check.test_samples", self.check.test_samples >= 1, "must be >= 1"),
            ("check.corpus_steps", self.check.corpus_steps >= 0, "must be >= 0 (0: all pretrain.steps)"),
            ("eval.n_samples", e.n_samples >= 1, "must be >= 1"),
            ("eval.n_problems", e.n_problems >= 1, "must be >= 1"),
            ("eval.ks", bool(e.ks) and all(1 <= k <= e.n_samples for k in e.ks), f"each k must be between 1 and eval.n_samples ({e.n_samples})"),
            ("r1.cold_start_examples", self.r1.cold_start_examples >= 1, "must be >= 1"),
            ("r1.cold_start_steps", self.r1.cold_start_steps >= 0, "must be >= 0"),
            ("r1.rl1_steps", self.r1.rl1_steps >= 0, "must be >= 0"),
            ("r1.sft2_steps", self.r1.sft2_steps >= 0, "must be >= 0"),
            ("r1.rl2_steps", self.r1.rl2_steps >= 0, "must be >= 0"),
            ("threads", 1 <= self.threads <= 1024, "must be between 1 and 1024"),
            ("seed", 0 <= self.seed < 2**32, "must be in [0, 2**32) (numpy's seed range)"),
            ("eval.seed", 0 <= e.seed < 2**32, "must be in [0, 2**32)"),
            ("save_every", self.save_every >= 1, "must be >= 1"),
            ("keep_checkpoints", self.keep_checkpoints >= 1, "must be >= 1"),
            ("max_bad_steps", self.max_bad_steps >= 1, "must be >= 1"),
            ("label.n_traces", self.label.n_traces >= 1, "must be >= 1"),
            ("sft.steps", self.sft.steps >= 0, "must be >= 0"),
            ("sft.batch_size", self.sft.batch_size >= 1, "must be >= 1"),
            ("sft.lr", self.sft.lr > 0, "must be positive"),
            ("sft.min_lr_ratio", 0 <= self.sft.min_lr_ratio <= 1, "must be in [0, 1]"),
            ("sft.warmup_steps", self.sft.warmup_steps >= 0, "must be >= 0"),
            ("sft.val_fraction", 0 <= self.sft.val_fraction < 1, "must be in [0, 1)"),
            ("sft.eval_every", self.sft.eval_every >= 0, "must be >= 0"),
            ("rejection.n_prompts", self.rejection.n_prompts >= 1, "must be >= 1"),
            ("rejection.samples_per_prompt", self.rejection.samples_per_prompt >= 1, "must be >= 1"),
            ("rejection.max_per_prompt", self.rejection.max_per_prompt >= 0, "must be >= 0 (0: all)"),
            ("rejection.prompts_per_batch", self.rejection.prompts_per_batch >= 1, "must be >= 1"),
            ("distill.top_k", self.distill.top_k >= 0, "must be >= 0 (0: the full vocabulary)"),
            ("distill.temperature", self.distill.temperature > 0, "must be positive"),
            ("distill.steps", self.distill.steps >= 0, "must be >= 0"),
            ("distill.prompts_per_step", self.distill.prompts_per_step >= 1, "must be >= 1"),
            ("distill.lr", self.distill.lr > 0, "must be positive"),
            ("label.port", 0 <= self.label.port <= 65535, "must be in [0, 65535]"),
            ("label.agreement", len(self.label.agreement) in (0, 2), "needs exactly two label files"),
            ("eval.rerank", not e.rerank or e.rerank.split(":", 1)[0] in ("prm", "orm") and len(e.rerank.split(":", 1)) == 2 and bool(e.rerank.split(":", 1)[1]),
             "must be empty, prm:PATH or orm:PATH"),
            ("prm.n_problems", self.prm.n_problems >= 1, "must be >= 1"),
            ("prm.traces_per_problem", self.prm.traces_per_problem >= 1, "must be >= 1"),
            ("prm.rollouts", self.prm.rollouts >= 0, "must be >= 0 (0: exact labels only)"),
            ("prm.steps", self.prm.steps >= 0, "must be >= 0"),
            ("prm.batch_size", self.prm.batch_size >= 1, "must be >= 1"),
            ("prm.lr", self.prm.lr > 0, "must be positive"),
            ("prm.threshold", 0.0 <= self.prm.threshold <= 1.0, "must be in [0, 1]"),
            ("prm.sample.temperature", self.prm.sample.temperature > 0, "must be positive (rollouts sample)"),
            ("prm.sample.top_p", 0 < self.prm.sample.top_p <= 1, "must be in (0, 1]"),
            ("prm.sample.max_new_tokens", self.prm.sample.max_new_tokens >= 1, "must be >= 1"),
            ("data.level_up", 0 <= self.data.level_down < self.data.level_up <= 1, "must be in (data.level_down, 1]"),
            ("data.level_down", 0 <= self.data.level_down, "must be >= 0"),
            ("data.window", self.data.window >= 1, "must be >= 1"),
            ("data.start_level", self.data.start_level >= 0, "must be >= 0"),
            ("data.band_low", 0 <= self.data.band_low <= self.data.band_high <= 1, "must be in [0, data.band_high] (and data.band_high <= 1)"),
            ("data.candidates", self.data.candidates >= 1, "must be >= 1"),
            ("data.samples", self.data.samples >= 1, "must be >= 1"),
            ("data.refresh_every", self.data.refresh_every >= 1, "must be >= 1"),
            ("data.signal_problems", self.data.signal_problems >= 0, "must be >= 0 (0: skip the check)"),
            ("data.curate_problems", self.data.curate_problems >= 1, "must be >= 1"),
        ]
        j = self.janus
        checks += [
            (f"janus.{k}", getattr(j, k) > 0, "must be positive") for k in
            ("vq_batch_size", "vq_lr", "vq_codebook", "vq_dim", "vq_channels", "enc_dim", "enc_layers", "batch_size", "lr",
             "eval_questions", "eval_prompts", "eval_samples", "image_temperature")
        ] + [(f"janus.{k}", getattr(j, k) >= 0, "must be >= 0") for k in ("vq_steps", "align_steps", "unified_steps", "instruct_steps", "warmup_steps", "vq_beta")] + [
            ("janus.vq_decay", 0 < j.vq_decay < 1, "must be in (0, 1)"),
            ("janus.cfg_dropout", 0 <= j.cfg_dropout < 1, "must be in [0, 1)"),
            ("janus.unified_qa", 0 <= j.unified_qa <= 1, "must be in [0, 1]"),
            ("janus.cfg_scale", j.cfg_scale >= 0, "must be >= 0"),
            ("janus.digit_fraction", 0 <= j.digit_fraction <= 1, "must be in [0, 1]"),
            ("janus.text_weight", 0 <= j.text_weight and 0 <= j.gen_weight and j.text_weight + j.gen_weight <= 1, "text_weight + gen_weight must be in [0, 1]"),
            ("janus.enc_dim", j.enc_dim % 4 == 0, "must be a multiple of 4 (the encoder's heads)"),
            ("janus.enc_pixel_std", j.enc_pixel_std > 0, "must be positive"),
            ("janus.enc_patch", j.enc_patch in (1, 2, 4, 8, 16, 32), "must divide the 32-pixel image side (1, 2, 4, 8, 16 or 32)"),
        ]
        # Values that used to pass and then silently meant nonsense (the bad-input sweep): a negative
        # clip flips every gradient's sign, a negative decay grows the weights, a negative reward
        # weight rewards the opposite (extra rewards may be penalties: their weights stay free), rope_theta or norm_eps 0 gives NaN at the first step.
        checks += [(f"{s}.{k}", getattr(getattr(self, s), k) >= 0, "must be >= 0 (0: off)" if k == "grad_clip" else "must be >= 0")
                   for s in ("pretrain", "rl", "sft", "prm") for k in ("grad_clip", "weight_decay", "warmup_steps")] + [
            (f"rl.{k}", getattr(r, k) >= 0, "must be >= 0") for k in ("format_weight", "correct_weight", "partial_weight", "overlong_weight")
        ] + [
            ("model.aux_loss_coef", m.aux_loss_coef >= 0, "must be >= 0 (0: off)"),
            ("model.norm_eps", m.norm_eps > 0, "must be positive"),
            ("model.rope_theta", m.rope_theta > 0, "must be positive"),
            ("model.rope_low_freq_factor", m.rope_low_freq_factor > 0, "must be positive"),
            ("model.rope_high_freq_factor", m.rope_high_freq_factor > 0, "must be positive"),
            ("pretrain.min_lr_ratio", 0 <= p.min_lr_ratio <= 1, "must be in [0, 1]"),
            ("rl.monitor.probe_seed", 0 <= r.monitor.probe_seed < 2**32, "must be in [0, 2**32)"),
            ("lora.alpha", self.lora.alpha > 0, "must be positive"),
            ("lora.targets", set(self.lora.targets) <= {"wq", "wk", "wv", "wo", "w1", "w2", "w3"}, "must name layers among wq, wk, wv, wo, w1, w2, w3"),
            ("data.signal_threshold", 0 <= self.data.signal_threshold <= 1, "must be in [0, 1] (a pass@k)"),
            ("check.test_samples", self.check.test_samples <= MAX_DRAWS, f"must be at most {MAX_DRAWS:,} (hours of drawing)"),
            ("rl.prm", not r.prm or r.reward != "outcome", "is read only with rl.reward process or hybrid (was: ignored with outcome)"),
            ("distill.data", not self.distill.data or self.distill.mode == "token", "is read only with distill.mode token (was: ignored in sequence mode)"),
        ]
        # NaN passes no comparison, but infinity passes `> 0`: no float setting may be either.
        checks = [(key, False, "must be a finite number") for key, v in _floats(self) if not math.isfinite(v)] + checks
        for prefix, s in (("rl.sample", r.sample), ("eval.sample", e.sample), ("generate.sample", self.generate.sample),
                          ("rejection.sample", self.rejection.sample), ("distill.sample", self.distill.sample)):
            checks += [
                (f"{prefix}.temperature", s.temperature > 0 or (s.temperature == 0 and prefix != "rl.sample"),
                 "must be positive (RL rollouts) or >= 0 (0: greedy, eval and sample)"),
                (f"{prefix}.top_p", 0 < s.top_p <= 1, "must be in (0, 1]"),
                (f"{prefix}.max_new_tokens", s.max_new_tokens >= 1, "must be >= 1"),
            ]
        for key, ok, why in checks:
            if not ok:
                raise ConfigError(f"config key {key}: {why}")
        return self


def _floats(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, value) of every float field of a config dataclass, nested ones included."""
    out = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _floats(value, f"{prefix}{f.name}.")
        elif isinstance(value, float):
            out.append((f"{prefix}{f.name}", value))
    return out


# ---------------------------------------------------------------------------------------------
# Building a config from dicts, YAML and dotted overrides


def _check_type(key: str, value: Any, tp: Any) -> Any:
    """Return ``value`` coerced to ``tp`` (int -> float only), or raise ConfigError."""
    origin = typing.get_origin(tp)
    if origin is Literal:
        if value not in typing.get_args(tp):
            raise ConfigError(f"config key {key}: {value!r} is not one of {list(typing.get_args(tp))}")
        return value
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key}: expected a list, got {value!r}")
        return [_check_type(f"{key}[{i}]", v, item) for i, v in enumerate(value)]
    if origin in (typing.Union, types.UnionType):
        raise TypeError(f"unions are not supported in configs ({key})")
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            raise ConfigError(f"config key {key}: the integer is too large for a float") from None
    if tp is float and isinstance(value, str) and _FLOAT_RE.match(value.strip()):
        return float(value)  # YAML 1.1 reads `1e-4` (no dot) as a string
    if tp in (int, float) and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"config key {key}: expected {tp.__name__}, got {type(value).__name__} {value!r}")
    return value


def _merge(obj: Any, data: dict, prefix: str = "") -> None:
    """Write ``data`` into dataclass ``obj`` in place, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"config key {prefix.rstrip('.') or '<root>'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    for key, value in data.items():
        full = f"{prefix}{key}"
        if key not in names:
            raise ConfigError(f"unknown config key {full!r}; known keys here: {sorted(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            _merge(current, value, prefix=f"{full}.")
        else:
            setattr(obj, key, _check_type(full, value, hints[key]))


def parse_overrides(args: list[str]) -> dict:
    """``['--rl.group_size', '16', '--resume']`` -> ``{'rl': {'group_size': 16}, 'resume': True}``.

    Values are parsed as YAML scalars (``16`` -> int, ``[1, 8]`` -> list); a flag with no value
    is ``true``."""
    out: dict = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"unexpected argument {arg!r}; overrides look like --section.key VALUE")
        key, _, inline = arg[2:].partition("=")
        if inline:
            raw = inline
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            raw, i = args[i + 1], i + 1
        else:
            raw = "true"
        try:
            value = yaml.safe_load(raw)
        except (yaml.YAMLError, ValueError):  # ValueError: a YAML timestamp such as 2001-13-45
            value = raw
        node = out
        *parents, leaf = key.replace("-", "_").split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"config key {key!r} is given twice")
        node[leaf] = value
        i += 1
    return out


PRESETS_DIR = Path(__file__).parent / "configs"
"shipped presets: ``--config NAME`` reads ``r1lab/configs/NAME.yaml`` when NAME is not a file"


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_yaml(path: str | Path) -> dict:
    """A YAML file of keys, or a shipped preset's by name (``--config v3-tiny``)."""
    path = Path(path)
    if not path.is_file() and path.suffix == "" and path.name == str(path) and (PRESETS_DIR / f"{path}.yaml").is_file():
        path = PRESETS_DIR / f"{path}.yaml"
    if not path.is_file():
        known = f" (shipped presets: {', '.join(presets())})" if presets() else ""
        raise ConfigError(f"config file {path} does not exist{known}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, ValueError) as err:  # ValueError: not UTF-8, or a bad YAML timestamp
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys, not {type(data).__name__}")
    return data


def build(*layers: dict) -> Config:
    """Defaults, then each layer of keys in order (a YAML file, then overrides), validated."""
    cfg = Config()
    for layer in layers:
        _merge(cfg, layer)
    return cfg.validate()


def to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def save(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False), encoding="utf-8")


@functools.cache
def describe(cls: type = Config, prefix: str = "") -> tuple[tuple[str, str, str], ...]:
    """(dotted key, default, doc) for every field, read from the docstrings under the fields (parsed
    once per class: the source does not change while the process runs)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    body = ast.parse(inspect.getsource(cls)).body[0].body
    for a, b in zip(body, body[1:]):
        if isinstance(a, ast.AnnAssign) and isinstance(b, ast.Expr) and isinstance(b.value, ast.Constant):
            docs[a.target.id] = b.value.value
    rows = []
    default = cls()
    for f in dataclasses.fields(cls):
        value = getattr(default, f.name)
        if dataclasses.is_dataclass(value):
            rows += describe(type(value), f"{prefix}{f.name}.")
        else:
            rows.append((f"{prefix}{f.name}", repr(value), docs.get(f.name, "")))
    return tuple(rows)
