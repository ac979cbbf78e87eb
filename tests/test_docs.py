"""The README stays true (house rule 11): every path in its map exists, every module, command,
benchmark, experiment and guide appears in the map, every relative link in README.md and docs/
resolves (file and #anchor), and every `r1lab` command the README or a guide quotes names a real stage and
real config keys. Fast: it reads files and the config schema, runs nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from r1lab import cli

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = sorted((ROOT / "docs").glob("*.md"))


def map_entries(text: str) -> dict[str, str]:
    """The README map as {path relative to the root: its description, continuation lines included}."""
    block = text.split("\n## Map\n", 1)[1].split("```", 2)[1]
    entries: dict[str, str] = {}
    parent, last = "", None
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        head, _, desc = line.strip().partition(" ")
        if indent == 0:
            parent, last = (head if head.endswith("/") else ""), head
            entries[head] = desc
        elif indent == 2:
            last = parent + head
            entries[last] = desc
        else:  # a continuation line of the entry above
            entries[last] += " " + line.strip()
    return entries


ENTRIES = map_entries(README.read_text(encoding="utf-8"))


def named(entry: str, name: str) -> bool:
    """Whether the map entry's description names ``name`` as a word (``moe_layer``, ``plots.py``)."""
    return re.search(rf"(?<![\w.-]){re.escape(name)}(?![\w-])", ENTRIES[entry]) is not None


def test_the_map_parses_and_every_path_in_it_exists():
    assert len(ENTRIES) > 30 and "r1lab/cli.py" in ENTRIES and "benchmarks/" in ENTRIES
    missing = [p for p in ENTRIES if not (ROOT / p).exists()]
    assert not missing, f"README map names paths that do not exist: {missing}"


def test_every_module_command_benchmark_experiment_and_guide_is_in_the_map():
    pkg = ROOT / "r1lab"
    absent = []
    for path in sorted(pkg.iterdir()):
        if path.name.startswith(("_", ".")) and path.name != "__main__.py" or path.suffix not in (".py", ""):
            continue
        rel = f"r1lab/{path.name}" + ("/" if path.is_dir() else "")
        if path.is_dir() and rel not in ENTRIES:  # a package may be mapped file by file (model/layers.py, ...)
            files = [f for f in path.glob("*.py") if f.name != "__init__.py"]
            absent += [f"r1lab/{path.name}/{f.name}" for f in files if f"r1lab/{path.name}/{f.name}" not in ENTRIES]
        elif path.is_dir():  # mapped as a folder: its description names each module
            absent += [f"{rel}{f.name}" for f in sorted(path.glob("*.py")) if f.name != "__init__.py" and not (named(rel, f.stem) or named(rel, f.name))]
        elif rel not in ENTRIES:
            absent.append(rel)
    for folder in ("benchmarks", "experiments"):
        absent += [f"{folder}/{f.name}" for f in sorted((ROOT / folder).glob("*.py")) if not named(f"{folder}/", f.stem)]
    absent += [f"docs/{f.name}" for f in DOCS if not named("docs/", f.stem)]
    assert not absent, f"not in the README map: {absent}"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (but - and _), spaces -> -."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and re.match(r"#{1,6} ", line):
            base = slug(line.lstrip("#"))
            n = seen.get(base, 0)
            seen[base] = n + 1
            out.add(base if n == 0 else f"{base}-{n}")
    return out


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
PATH_MENTION = re.compile(r"(?<![\w/.-])((?:docs|benchmarks|experiments|tests)/[\w./-]+\.(?:md|py|png))")


def prose(path: Path) -> str:
    """The file without fenced code blocks (where shell output may hold anything)."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)


@pytest.mark.parametrize("path", [README, *DOCS], ids=lambda p: p.name)
def test_every_relative_link_and_anchor_resolves(path):
    broken = []
    for target in LINK.findall(prose(path)):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    # Paths named in prose, `docs/rl.md` or (docs/rl.md): relative to the repository root.
    broken += [m for m in PATH_MENTION.findall(prose(path)) if not (ROOT / m).exists() and not (path.parent / m).exists()]
    assert not broken, f"{path.name}: broken links or paths {broken}"


FLAGS = {"--config", "--debug", "--help", "--nproc", "--from", "--agreement", "--port", "--host", "--token"}


def quoted_commands(text: str) -> list[str]:
    """`r1lab ...` commands in inline code, fenced blocks and indented code blocks, one per line
    (shell line continuations joined)."""
    text = re.sub(r"\\\n[ \t]*", " ", text)
    prose = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    found = re.findall(r"`(r1lab [^`]+)`", prose)
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        found += [m.group(1) for m in re.finditer(r"(?:^|\s)(r1lab [^\n#|]*)", block)]
    # indented code: a line that starts with the command (after a prompt, variables, nice or time)
    found += re.findall(r"^(?: {4}|\t)\s*(?:\$ )?(?:[A-Z_]+=\S+ )*(?:nice -n \d+ )?(?:/usr/bin/time -v )?(r1lab [a-z][^\n#|`]*)", prose, flags=re.M)
    return found


def test_commands_quoted_in_the_readme_and_guides_name_real_stages_and_keys():
    """Each quoted `r1lab STAGE --key` in README.md or docs/ names a stage and a key that
    `r1lab STAGE --help` lists."""
    commands = [(path.name, c) for path in (README, *DOCS) for c in quoted_commands(path.read_text(encoding="utf-8"))]
    assert sum(name == README.name for name, _ in commands) > 15 and len(commands) > 60
    bad, listed_by_stage = [], {}
    for name, command in commands:
        words = command.split()
        stage = words[1]
        if stage.startswith("<"):  # `r1lab <stage>`: the pattern itself
            continue
        if stage not in cli.STAGES:
            bad.append(f"{name}: {command}: no stage {stage!r}")
            continue
        if stage not in listed_by_stage:  # one help text per stage: building one reads every config docstring
            listed_by_stage[stage] = set(re.findall(r"^  (--[\w.]+)", cli.stage_help(stage), flags=re.M))
        listed = listed_by_stage[stage]
        for flag in (w for w in words[2:] if w.startswith("--")):
            flag = flag.split("=")[0]
            if flag not in FLAGS and flag not in listed:
                bad.append(f"{name}: {command}: `r1lab {stage} --help` lists no {flag}")
    assert not bad, bad


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The checks above can fail: a made-up map path, link, anchor and key are each reported."""
    text = "intro\n## Map\n\n```\nr1lab/\n  cli.py     x\n  nope.py    y\nbenchmarks/   a\n```\n"
    entries = map_entries(text)
    assert "r1lab/nope.py" in entries and not (ROOT / "r1lab/nope.py").exists()
    page = tmp_path / "page.md"
    page.write_text("# Title here\n\n[a](page.md#title-here) [b](page.md#nope) [c](gone.md) `r1lab rl --rl.nope 1`\n")
    assert "title-here" in anchors(page) and "nope" not in anchors(page)
    assert [t for t in LINK.findall(prose(page))] == ["page.md#title-here", "page.md#nope", "gone.md"]
    assert quoted_commands(page.read_text()) == ["r1lab rl --rl.nope 1"]
    assert "  --rl.group_size " in cli.stage_help("rl") and "--rl.nope" not in cli.stage_help("rl")
    assert "--rl.group_size" not in cli.stage_help("sample")  # a real key, but not one sample reads


def test_every_command_has_a_readme_section_and_a_guide():
    """Each `r1lab` stage has a `### ... r1lab STAGE ...` section in the README that links a docs/ guide."""
    text = README.read_text(encoding="utf-8")
    sections = re.split(r"^### ", text, flags=re.M)[1:]
    missing = []
    for stage in cli.STAGES:
        mine = [s for s in sections if re.search(rf"`r1lab {re.escape(stage)}[` ]", s.splitlines()[0])]
        if not mine or not re.search(r"\]\(docs/[\w-]+\.md", mine[0]):
            missing.append(stage)
    assert not missing, f"no README section with a docs/ guide for: {missing}"
