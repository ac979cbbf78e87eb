"""RoPE frequency scaling of imported checkpoints: linear position interpolation and Llama 3.1's
per-band scaling match transformers' logits, survive an export, and the scaling function equals a
plain per-frequency loop of Llama 3.1's rule."""

import json
import math

import pytest
import torch

pytest.importorskip("transformers")
from transformers import AutoModelForCausalLM  # noqa: E402

from hf_fixtures import hf_folder  # noqa: E402
from r1lab.model import hf  # noqa: E402
from r1lab.model.layers import scale_inv_freq  # noqa: E402

LLAMA3 = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
LINEAR = {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}


def test_llama3_scaling_equals_the_rule_frequency_by_frequency():
    inv = 1.0 / 10000.0 ** (torch.arange(0, 16, 2, dtype=torch.float64) / 16)
    got = scale_inv_freq(inv, "llama3", 8.0, 1.0, 4.0, 64)
    for f, g in zip(inv.tolist(), got.tolist()):
        wavelen = 2 * math.pi / f
        if wavelen < 64 / 4:
            want = f  # high frequencies kept
        elif wavelen > 64 / 1:
            want = f / 8  # low frequencies interpolated
        else:
            s = (64 / wavelen - 1) / (4 - 1)
            want = (1 - s) * f / 8 + s * f
        assert g == pytest.approx(want, rel=1e-12)
    assert (got != inv).any() and (got == inv).any()  # both bands occur at this width
    assert torch.equal(scale_inv_freq(inv, "linear", 4.0), inv / 4)


@pytest.mark.parametrize("rope", [LLAMA3, LINEAR])
def test_scaled_rope_matches_transformers_and_exports_back(tmp_path, rope):
    folder = hf_folder(tmp_path / "m", "llama", rope_parameters=rope)
    ours, tok, _ = hf.load(folder)
    assert ours.cfg.rope_scaling == rope["rope_type"] and ours.cfg.rope_factor == rope["factor"]
    theirs = AutoModelForCausalLM.from_pretrained(folder).eval()
    ids = torch.randint(0, 320, (2, 200), generator=torch.Generator().manual_seed(0))  # past the original 64 positions
    with torch.no_grad():
        a, b = ours(ids).logits_BTV, theirs(ids).logits
    assert (a - b).abs().max() < 1e-4
    plain, _, _ = hf.load(hf_folder(tmp_path / "plain", "llama"))  # the same weights without the scaling
    with torch.no_grad():
        assert (plain(ids).logits_BTV - b).abs().max() > 1e-3
    hf.export(ours, tok, tmp_path / "out")
    written = json.loads((tmp_path / "out" / "config.json").read_text())["rope_parameters"]
    assert written == rope
    assert hf.load(tmp_path / "out")[0].cfg == ours.cfg
