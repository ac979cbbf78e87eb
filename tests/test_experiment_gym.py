"""experiments/breadth.py and experiments/curation.py --quick: each writes its table, plots and a
summary with one row per dataset (per arm), and the curation arms pay for their estimates."""

import json
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_breadth_quick_writes_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["breadth.py", "--quick", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "experiments" / "breadth.py"), run_name="__main__")
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [r["dataset"] for r in summary["rows"]] == ["basic_arithmetic", "chain_sum"] and summary["quick"] is True
    assert all(r["max_seq_len"] > 128 and 0 <= r["base_pass@8"] <= 1 for r in summary["rows"])  # sized from the task
    assert "RL gained" in summary["verdict"] and summary["base"] == "mixed"
    assert len({r["max_seq_len"] for r in summary["rows"]}) == 1  # one base for every dataset
    for png in ("pass_at_1.png", "len_change.png"):
        assert (tmp_path / png).stat().st_size > 1000


@pytest.mark.slow
def test_curation_quick_writes_its_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["curation.py", "--quick", "--out", str(tmp_path)])
    runpy.run_path(str(ROOT / "experiments" / "curation.py"), run_name="__main__")
    summary = json.loads((tmp_path / "summary.json").read_text())
    rows = {r["arm"]: r for r in summary["rows"]}
    assert list(rows) == ["uniform", "curriculum", "pass_rate"]
    assert rows["pass_rate"]["rl_steps"] < rows["uniform"]["rl_steps"]  # estimation is paid out of the same budget
    assert all(run["curve"][-1][1] <= summary["budget_completions"] for run in summary["runs"])
    folder = "letter_counting_min_words30_max_words38"  # --quick runs the default dataset
    metrics = [json.loads(line) for line in (tmp_path / folder / "curriculum_s0" / "metrics.jsonl").read_text().splitlines()]
    assert all("curriculum/level" in m for m in metrics)
    assert (tmp_path / f"{folder}_pass_at_1.png").stat().st_size > 1000


def test_curation_reads_datasets_with_options():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import curation
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    assert curation.split_datasets("gcd,letter_counting") == ["gcd", "letter_counting"]
    hard = "letter_counting@min_words=30,max_words=38"
    assert curation.split_datasets(hard) == [hard]
    assert curation.split_datasets(f"family_relationships,{hard},gcd") == curation.split_datasets(f"family_relationships;{hard};gcd") == ["family_relationships", hard, "gcd"]
    assert curation.slug("letter_counting@min_words=30,max_words=38") == "letter_counting_min_words30_max_words38"


def test_curation_charges_each_arm_within_its_budget():
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import curation
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    from r1lab import config as config_lib

    for candidates, samples, refresh in ((16, 4, 5), (32, 4, 6), (8, 8, 1)):
        cfg = config_lib.build({"rl": {"prompts_per_step": 8}, "data": {"candidates": candidates, "samples": samples, "refresh_every": refresh}})
        for arm in curation.ARMS:
            for budget in (1024, 1536):
                steps = curation.steps_for(cfg, arm, budget)
                assert curation.charged(cfg, arm, steps) <= budget < curation.charged(cfg, arm, steps + 1)
    cfg = config_lib.build({"rl": {"prompts_per_step": 8}, "data": {"candidates": 16, "samples": 4, "refresh_every": 5}})
    # refreshes before steps 1, 6, 11: 64 estimates each, on top of 64 completions a step
    assert [curation.charged(cfg, "pass_rate", s) for s in (1, 5, 6, 13)] == [128, 384, 512, 13 * 64 + 3 * 64]


def test_curation_refuses_a_bad_dataset_before_any_base_is_pretrained(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["curation.py", "--datasets", "gcd,letter_counting@nosuch=1", "--out", str(out)])
    with pytest.raises(SystemExit) as err:
        runpy.run_path(str(ROOT / "experiments" / "curation.py"), run_name="__main__")
    assert "unknown option 'nosuch'" in str(err.value) and not out.exists()


def test_curation_defaults_are_the_docs_headline_setting():
    # docs/gym.md's headline figures (and README's) come from the 3-seed letter_counting replication:
    # running the experiment with its defaults must be that command, less where it writes and
    # which base it starts from.
    sys.path.insert(0, str(ROOT / "experiments"))
    try:
        import curation
    finally:
        sys.path.remove(str(ROOT / "experiments"))
    text = (ROOT / "docs" / "gym.md").read_text(encoding="utf-8").replace("\\\n", " ")
    (command,) = [line for line in text.splitlines() if "curation.py --out runs/experiments/curation4 " in line]
    flags = command.split("curation.py", 1)[1].split()
    given = dict(zip(flags[::2], flags[1::2]))
    defaults = vars(curation.parser().parse_args([]))
    compared = {k: v for k, v in given.items() if k not in ("--out", "--init", "--workers")}
    assert len(compared) >= 10, compared
    for flag, value in compared.items():
        default = defaults[flag[2:].replace("-", "_")]
        assert str(default) == value, (flag, default, value)
