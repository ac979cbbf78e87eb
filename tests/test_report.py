"""report.html: built from a run or experiment folder, opened in a real headless Chromium."""

from __future__ import annotations

import json
import re

import pytest
from browser import chrome, close, screenshot
from conftest import TINY, overrides

from r1lab import tracking
from r1lab.cli import main
from r1lab.report import experiment, html


@pytest.fixture(scope="module")
def zero_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "zero"
    assert main(["zero", "--out", str(out), *overrides(TINY)]) == 0
    return out


def test_zero_writes_report_and_eval_samples(zero_run, capsys):
    assert (zero_run / "report.html").is_file()
    base = json.loads((zero_run / "eval" / "base.json").read_text())
    rows = [json.loads(line) for line in (zero_run / "eval" / "base.samples.jsonl").read_text().splitlines()]
    assert len(rows) == base["n_problems"] * base["n"]
    assert set(rows[0]) >= {"task", "question", "gold", "completion", "answer", "reward", "correct"}
    # The samples are the ones the metrics counted: per-problem correct counts match.
    for p in base["problems"]:
        assert sum(r["correct"] for r in rows if r["question"] == p["question"]) == p["c"]
    # `r1lab eval` writes its samples beside its JSON too.
    assert main(["eval", "--init", str(zero_run / "rl"), *overrides({"eval": TINY["eval"], "threads": 1})]) == 0
    assert list((zero_run / "rl" / "eval").glob("chain-test-step*.samples.jsonl"))


def test_report_html_renders_in_chromium(zero_run):
    path = html.build(zero_run)
    text = path.read_text()
    assert "http://" not in text and "https://" not in text  # self-contained: nothing to fetch
    summary = json.loads((zero_run / "summary.json").read_text())
    driver = chrome()
    try:
        driver.get(path.as_uri())
        imgs = driver.find_elements("tag name", "img")
        assert len(imgs) >= 8  # pass@k, pretraining and RL curves
        widths = [driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth", im) for im in imgs]
        assert all(w > 0 for w in widths), widths
        titles = [im.get_attribute("alt") for im in imgs]
        assert {"pretrain: pretraining loss", "rl: reward", "rl: held-out pass@1", "pass@k against k"} <= set(titles)
        cells = [c.text for c in driver.find_elements("css selector", "table.figures-table td")]
        for model in ("base", "rl"):
            assert tracking._cell(summary[model]["mean_len"]) in cells
        # Sample completions: the same prompts, one column per evaluated model, answer marked.
        heads = [h.text for h in driver.find_elements("css selector", "table.samples th")]
        assert heads[:4] == ["question", "reference", "base", "rl"]
        assert len(driver.find_elements("css selector", "table.samples tr")) == 1 + 3
        screenshot(driver, "report.png")
    finally:
        close(driver)


def test_report_of_a_run_still_going(tmp_path):
    """No summary, a metrics file cut mid-line, an expert-load file: the page shows what exists."""
    run = tmp_path / "run"
    (run / "rl").mkdir(parents=True)
    lines = [json.dumps({"step": s, "time": 0, "rollout/reward_mean": 0.1 * s, "train/kl": 0.01, "rollout/entropy": 1.0 - 0.1 * s}) for s in (1, 2, 3)]
    (run / "rl" / "metrics.jsonl").write_text("\n".join(lines) + '\n{"step": 4, "rollout/rew')
    load = [{"step": s, "load_LE": [[0.5, 0.3, 0.1, 0.1], [0.25, 0.25, 0.25, 0.25]]} for s in (1, 2, 3)]
    (run / "rl" / "expert_load.jsonl").write_text("".join(json.dumps(r) + "\n" for r in load))
    text = html.build(run).read_text()
    assert "in progress or stopped" in text and "rl at step 3" in text
    alts = re.findall(r'alt="([^"]+)"', text)
    assert "rl: reward" in alts and "rl: KL to the reference policy" in alts and "rl: entropy" in alts
    assert "rl: expert load at step 1" in alts and "rl: expert load at step 3" in alts
    assert "policy loss" not in text  # no data, no section
    assert (run / "plots" / "rl-expert-load-step3.png").is_file()


def test_report_of_an_experiment_folder(tmp_path):
    """Comparison table, the experiment's own PNGs, and one curve per arm with seeds as a band."""
    exp = tmp_path / "exp"
    for arm, base in (("moe", 0.5), ("dense", 0.3)):
        for seed in (0, 1):
            d = exp / arm / f"seed{seed}" / "rl"
            d.mkdir(parents=True)
            rows = [{"step": s, "rollout/reward_mean": base + 0.1 * s + 0.01 * seed} for s in range(1, 5)]
            (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    from r1lab.report import plots

    plots.bars(exp / "final.png", {"moe": [0.9, 0.91], "dense": [0.7, 0.71]}, title="final reward", ylabel="reward")
    experiment.write(exp, "moe-vs-dense", [{"arm": "moe", "reward": 0.905}, {"arm": "dense", "reward": 0.705}], {"verdict": "moe higher"})
    text = html.build(exp).read_text()
    assert "r1lab experiment" in text and "0.905" in text and "verdict: moe higher" in text
    alts = re.findall(r'alt="([^"]+)"', text)
    assert "final" in alts and "rl: reward (rollout/reward_mean)" in alts
    assert (exp / "plots" / "arms-rl-rollout_reward_mean.png").is_file()


def test_report_cli_errors(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    assert "nothing to report" in capsys.readouterr().err
