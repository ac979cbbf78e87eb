"""Shared test setup: one torch thread (tiny ops with two threads on a busy 2-core machine were
tens of times slower) and no progress bars."""

import os

import pytest
import torch

os.environ.setdefault("R1LAB_NO_PROGRESS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = {
    "model": {"d_model": 32, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "d_ff": 64, "n_routed_experts": 4, "top_k": 2, "d_expert": 16},
    "pretrain": {"steps": 6, "batch_size": 8, "warmup_steps": 2},
    "rl": {"steps": 3, "prompts_per_step": 2, "group_size": 4, "eval_every": 2, "eval_problems": 3, "sample": {"max_new_tokens": 24},
           "monitor": {"probe_problems": 4}},
    "eval": {"n_problems": 3, "n_samples": 4, "ks": [1, 4], "sample": {"max_new_tokens": 24}},
    "save_every": 2,
    "threads": 1,
    "tensorboard": False,
}


def overrides(d: dict, prefix: str = "") -> list[str]:
    """Nested dict -> ['--a.b', 'value', ...] for the CLI."""
    import json

    out = []
    for k, v in d.items():
        if isinstance(v, dict):
            out += overrides(v, f"{prefix}{k}.")
        else:
            out += [f"--{prefix}{k}", json.dumps(v)]
    return out


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """A tiny model pretrained once per test module, for the stages that start from one."""
    from r1lab.cli import main

    out = tmp_path_factory.mktemp("runs") / "base"
    assert main(["pretrain", "--out", str(out), *overrides(TINY)]) == 0
    return out
