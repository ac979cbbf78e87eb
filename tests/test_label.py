"""r1lab label: traces, the durable label file, agreement, the exact step checks, and the page
driven in a real headless Chromium through a SIGKILL and a restart."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from itertools import product
from pathlib import Path

import pytest
from browser import chrome, close, screenshot

from r1lab.cli import main
from r1lab.label import agreement, traces
from r1lab.label.app import create_app
from r1lab.label.store import LabelStore, read_records
from r1lab.tasks import Example, get_task

ROOT = Path(__file__).resolve().parent.parent
CHAINS = [  # (question, completion): worked chain solutions, some with a wrong step
    ("7+5*2-3", "<think>7+5=12\n12*2=24\n24-3=21</think><answer>21</answer>"),
    ("9*9-9+2", "<think>9*9=81\n81-9=71\n71+2=73</think><answer>73</answer>"),
    ("4*2+6*3", "<think>4*2=8\n8+6=14\n14*3=42</think><answer>42</answer>"),
]


def write_traces(path: Path) -> Path:
    rows = [{"task": "chain", "question": q, "gold": str(eval_left(q)), "completion": c} for q, c in CHAINS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def eval_left(q: str) -> int:
    """Left-to-right value of a chain (the task's definition), computed independently."""
    tokens = re.findall(r"\d+|[-+*]", q)
    value = int(tokens[0])
    for op, b in zip(tokens[1::2], tokens[2::2]):
        value = value + int(b) if op == "+" else value - int(b) if op == "-" else value * int(b)
    return value


# --- the maths and the checks ------------------------------------------------------------------


def kappa_by_definition(a, b):
    """Cohen's kappa from the contingency table, written out as in Cohen (1960)."""
    cats = sorted(set(a) | set(b))
    n = len(a)
    table = {(x, y): sum(1 for u, v in zip(a, b) if (u, v) == (x, y)) for x, y in product(cats, cats)}
    p_o = sum(table[(c, c)] for c in cats) / n
    p_e = sum(sum(table[(c, y)] for y in cats) / n * sum(table[(x, c)] for x in cats) / n for c in cats)
    return (p_o - p_e) / (1 - p_e)


def test_cohen_kappa_hand_computed_and_against_the_table_definition():
    # p_o = 4/5; p_e = (2*1 + 2*3 + 1*1) / 25 = 9/25; kappa = (0.8 - 0.36) / 0.64
    assert agreement.cohen_kappa(list("aabbc"), list("abbbc")) == pytest.approx(0.6875)
    assert agreement.cohen_kappa(["good", "bad"] * 3, ["good", "bad"] * 3) == 1.0
    import random

    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 30)
        a = [rng.choice(["good", "bad", "unsure"]) for _ in range(n)]
        b = [rng.choice(["good", "bad", "unsure"]) for _ in range(n)]
        if len(set(a)) == len(set(b)) == 1 and a[0] == b[0]:
            continue
        assert agreement.cohen_kappa(a, b) == pytest.approx(kappa_by_definition(a, b))
    assert agreement.cohen_kappa(["good"] * 4, ["good"] * 4) != agreement.cohen_kappa(["good"] * 4, ["good"] * 4)  # NaN: undefined


def test_step_checks_chain_and_countdown():
    chain = get_task("chain")
    ex = Example("7+5*2-3", "21")
    assert chain.step_checks(ex, ["7+5=12", "12*2=24", "24-3=21"]) == [True, True, True]
    # a wrong result, a line the check cannot read, a step past the chain's end
    assert chain.step_checks(ex, ["7+5=12", "so", "12*2=25", "25-3=22", "1+1=2"]) == [True, None, False, False, False]
    cd = get_task("countdown")
    ex = Example("Use 3 7 2 to make 23", "7*3+2")
    assert cd.step_checks(ex, ["7*3=21", "21+2=23"]) == [True, True]
    assert cd.step_checks(ex, ["7*7=49", "3+2=6", "3+2=5", "5*7=35"]) == [False, False, True, True]
    assert get_task("sort").step_checks(Example("x", "y"), ["a"]) is None  # no exact check: None


def test_split_steps_and_bad_trace_files(tmp_path):
    assert traces.split_steps("<think>a=1\n\n b=2 \n</think><answer>2</answer>") == ["a=1", "b=2"]
    assert traces.split_steps("<think></think><answer>2</answer>") == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+2", "completion": "<think>1+2=3</think>"}\n{oops\n')
    with pytest.raises(traces.TraceError, match=r"bad.jsonl:2: not a JSON line"):
        traces.load(bad, 10, 0)
    bad.write_text('{"question": "1+2"}\n')
    with pytest.raises(traces.TraceError, match=r"bad.jsonl:1: needs \"completion\""):
        traces.load(bad, 10, 0)


def test_traces_from_a_run_folder_are_seeded_and_have_steps(tmp_path):
    (tmp_path / "eval").mkdir()
    rows = [{"task": "chain", "question": q, "gold": "0", "completion": c, "answer": "0", "reward": 0.0, "correct": False} for q, c in CHAINS]
    rows.append({"task": "chain", "question": "1+1+1", "gold": "3", "completion": "<think></think><answer>3</answer>"})
    (tmp_path / "eval" / "rl.samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    picked = traces.load(tmp_path, 2, seed=0)
    assert len(picked) == 2 and all(t.steps for t in picked)
    assert [t.id for t in picked] == [t.id for t in traces.load(tmp_path, 2, seed=0)]
    assert len(traces.load(tmp_path, 50, seed=0)) == 3  # the step-less trace is not offered


def test_label_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("[1, 2]\n")
    assert main(["label", "--from", str(bad), "--out", str(tmp_path / "l.jsonl")]) == 2
    assert main(["label", "--from", str(write_traces(tmp_path / "t.jsonl"))]) == 2
    assert main(["label", "--agreement", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"r1lab: error: {bad}:1: expected a JSON object, got list"
    assert "--out" in err[1] and "two label files" in err[2]
    assert "Traceback" not in "".join(err)


# --- the store ---------------------------------------------------------------------------------


def test_store_resumes_with_every_label(tmp_path):
    ts = traces.load(write_traces(tmp_path / "t.jsonl"), 10, 0)
    out = tmp_path / "labels.jsonl"
    store = LabelStore(out, ts)
    assert store.first_unlabelled() == 0
    for k, name in enumerate(["good", "good", "bad"]):
        store.set(ts[0].id, k, name)
    store.set(ts[1].id, 0, "unsure")
    again = LabelStore(out, ts)  # a new server on the same file, after a kill
    assert again.labels(ts[0]) == ["good", "good", "bad"] and again.labels(ts[1]) == ["unsure", None, None]
    assert again.first_unlabelled() == 1 and again.progress() == (1, 3)
    recs = read_records(out)
    assert set(recs[ts[0].id]) == {"id", "task", "question", "gold", "steps", "labels"}
    assert len(out.read_text().splitlines()) == 2  # compacted to one record per trace on open
    with pytest.raises(ValueError, match="unknown label"):
        store.set(ts[0].id, 0, "meh")
    # A writer killed mid-line leaves a cut last line: ignored (never confirmed), the rest kept.
    with open(out, "a") as f:
        f.write('{"id": "' + ts[2].id + '", "task": "ch')
    assert LabelStore(out, ts).labels(ts[0]) == ["good", "good", "bad"]
    assert out.read_text().endswith("\n") and len(out.read_text().splitlines()) == 2


def _hammer(out: str, src: str, offset: int) -> None:
    ts = traces.load(src, 10, 0)
    store = LabelStore(out, ts)
    for t in ts:
        for k in range(offset, len(t.steps), 2):
            store.set(t.id, k, "good" if offset == 0 else "bad")


def test_two_writers_on_one_file_lose_nothing(tmp_path):
    """Two processes (two servers, or two tabs' worth of requests) label alternate steps of the
    same traces at once: every label of both ends up in the file, which stays valid JSONL."""
    src = write_traces(tmp_path / "t.jsonl")
    out = tmp_path / "labels.jsonl"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_hammer, args=(str(out), str(src), o)) for o in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    recs = read_records(out)
    for t in traces.load(src, 10, 0):
        assert recs[t.id]["labels"] == ["good" if k % 2 == 0 else "bad" for k in range(len(t.steps))]


def test_agreement_cli_prints_kappa_and_exact_check_agreement(tmp_path, capsys):
    ts = traces.load(write_traces(tmp_path / "t.jsonl"), 10, 0)
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    sa, sb = LabelStore(a, ts), LabelStore(b, ts)
    # The second trace's steps 2 and 3 are wrong (81-9=71, and 71+2 builds on it): A says so,
    # B calls everything good.
    assert [t.checks() for t in ts] == [[True] * 3, [True, False, False], [True] * 3]
    for t in ts:
        checks = t.checks()
        for k, ok in enumerate(checks):
            sa.set(t.id, k, "good" if ok else "bad")
            sb.set(t.id, k, "good")
    assert main(["label", "--agreement", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    rows = {line.split("  ")[0]: line.split() for line in out.splitlines() if "vs" in line}
    # Every step is labelled by both and checked: 9 steps, A and B agree on 7; B's "good" on
    # all nine is an annotator with no variance, so kappa is 0 (p_o = p_e = 7/9).
    assert rows["A vs B"][-2:] == [f"{7 / 9:.4g}", "0"]
    assert rows["A vs exact check"][-1] == "1" and rows["B vs exact check"][-1] == f"{7 / 9:.4g}"


# --- the web app -------------------------------------------------------------------------------


def test_app_errors_are_pages_never_tracebacks_and_token_is_required(tmp_path):
    ts = traces.load(write_traces(tmp_path / "t.jsonl"), 10, 0)
    client = create_app(LabelStore(tmp_path / "l.jsonl", ts)).test_client()
    r = client.get("/trace/99")
    assert r.status_code == 404 and b"no trace 99" in r.data and b"Traceback" not in r.data
    r = client.post("/api/label", data="not json", content_type="application/json")
    assert r.status_code == 400 and "error" in r.get_json()
    r = client.post("/api/label", json={"id": ts[0].id, "step": 7, "label": "good"})
    assert r.status_code == 400 and "no step 7" in r.get_json()["error"]
    assert client.get("/").headers["Location"].endswith("/trace/0")
    for t in ts:
        for k in range(len(t.steps)):
            assert client.post("/api/label", json={"id": t.id, "step": k, "label": "good"}).status_code == 200
    r = client.get("/")
    assert r.status_code == 200 and b"Every trace is labelled" in r.data and b"3 / 3" in r.data

    secured = create_app(LabelStore(tmp_path / "l2.jsonl", ts), token="s3cret").test_client()
    assert secured.get("/trace/0").status_code == 403
    assert secured.post("/api/label", json={"id": ts[0].id, "step": 0, "label": "good"}).status_code == 403
    assert secured.get("/trace/0?token=s3cret").status_code == 200  # sets the cookie
    assert secured.post("/api/label", json={"id": ts[0].id, "step": 0, "label": "good"}).status_code == 200


def _serve(src: Path, out: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "r1lab.cli", "label", "--from", str(src), "--out", str(out), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 30
    while time.time() < deadline:
        line = proc.stdout.readline()
        m = re.search(r"serving (http://\S+)", line)
        if m:
            return proc, m.group(1)
    proc.kill()
    raise AssertionError("the label server did not start")


def test_label_page_in_chromium_survives_sigkill(tmp_path):
    src, out = write_traces(tmp_path / "t.jsonl"), tmp_path / "labels.jsonl"
    ts = traces.load(src, 10, 0)
    proc, url = _serve(src, out)
    driver = chrome()
    try:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(driver, 10)
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "trace-id").text == ts[0].id)
        driver.find_element(By.CSS_SELECTOR, "#step-0 button.good").click()  # a click
        wait.until(lambda d: "saved step 1" in d.find_element(By.ID, "status").text)
        body = driver.find_element(By.TAG_NAME, "body")
        body.send_keys("2")  # keys: step 2 bad
        wait.until(lambda d: "saved step 2" in d.find_element(By.ID, "status").text)
        body.send_keys("c")  # exact step check on demand
        checks = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".check") if e.is_displayed()]
        assert checks == ["✓ exact"] * 3
        body.send_keys("u")  # step 3 unsure: the trace is complete and the page moves on
        wait.until(lambda d: d.find_element(By.ID, "trace-id").text == ts[1].id)
        driver.find_element(By.TAG_NAME, "body").send_keys("g")  # one label on the second trace
        wait.until(lambda d: "saved step 1" in d.find_element(By.ID, "status").text)
        driver.find_element(By.TAG_NAME, "body").send_keys("r")
        assert "reference answer: 74" in driver.find_element(By.ID, "reference").text
        driver.find_element(By.TAG_NAME, "body").send_keys("c")
        checks = [e.text for e in driver.find_elements(By.CSS_SELECTOR, ".check") if e.is_displayed()]
        assert checks == ["✓ exact", "✗ exact", "✗ exact"]  # 81-9=71 is wrong, and 71+2 builds on it
        screenshot(driver, "label.png")

        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        recs = read_records(out)
        assert recs[ts[0].id]["labels"] == ["good", "bad", "unsure"] and recs[ts[1].id]["labels"] == ["good", None, None]

        proc, url = _serve(src, out)  # restart: resume at the first trace not fully labelled
        driver.get(url)
        wait.until(lambda d: d.find_element(By.ID, "trace-id").text == ts[1].id)
        assert driver.find_element(By.CSS_SELECTOR, "#step-0 button.good").get_attribute("class") == "good on"
        assert "1 / 3 traces labelled" in driver.find_element(By.ID, "progress").text
        driver.find_element(By.TAG_NAME, "body").send_keys("p")  # back: the first trace's labels kept
        wait.until(lambda d: d.find_element(By.ID, "trace-id").text == ts[0].id)
        on = [e.get_attribute("data-label") for e in driver.find_elements(By.CSS_SELECTOR, "li.step button.on")]
        assert on == ["good", "bad", "unsure"]
    finally:
        close(driver)
        proc.kill()
        proc.wait(10)
