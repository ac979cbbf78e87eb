"""Reward-hacking monitor: is the policy learning the task, or the reward?

Goodhart in RL from verifiable or learned rewards (Skalse et al., "Defining and characterizing
reward hacking", arXiv:2209.13085; Gao et al., "Scaling laws for reward model overoptimization",
arXiv:2210.10760): the proxy being optimised keeps rising while the true objective stalls or
falls. In r1lab the true objective is always at hand: the task's exact verifier. So the monitor
compares the two, and flags the shapes that known exploits take in a batch of completions. It
only observes: nothing here feeds back into training.

Two trend tests (``diverging``), each a least-squares line over a window:

- **probe**: at every probe, (mean training proxy reward since the previous probe, verified pass
  rate of the policy on a fixed held-out probe set); fired when over the last ``probe_window``
  probes the proxy's line gains >= ``reward_rise`` while the verified line loses >=
  ``accuracy_fall``. This is the test of the issue's "proxy rises while verified accuracy falls".
- **batch**: the same test over the last ``window`` training batches, with the batch's own
  verified correct rate; free, and it catches a proxy that pays for something other than
  correctness (format, steps) within the training distribution.

Exploit shapes, per completion (pure functions below), rated per batch and flagged when a
window's mean rate reaches ``shape_rate`` *and* rose by ``shape_rise`` above the run's first
window (a tiny model that never closes its tags is not hacking; one that learns to stop closing
them is): repeated text, no (or an empty) answer, truncation at the token budget, several answer
blocks, format-only reward (among completions paid for the format, the fraction with a wrong
answer). Length gaming is a trend: the mean length's line gains ``length_rise`` of its start while
the verified correct rate's line does not rise (R1-Zero's honest signature is length rising
*with* accuracy).

Departure: the papers above measure over-optimisation against a held-out gold reward model; here
the gold is exact, so the monitor's "verified" numbers are the same ones pass@k counts.
An event fires once at the onset of its condition and again only after the condition stayed
clear for a whole window.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field

from r1lab.config import MonitorConfig
from r1lab.rewards import ANSWER_CLOSE, ANSWER_OPEN

SHAPES = ("repeated", "empty_answer", "truncated", "multi_answer", "format_only")
"exploit shapes rated per completion, in the order metrics list them"


@dataclass(frozen=True)
class Event:
    """One flagged sign of reward hacking."""

    step: int
    kind: str  # "divergence_probe", "divergence_batch", "length_gaming", or a shape of SHAPES
    message: str
    values: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Per completion


def is_repetitive(text: str, min_repeats: int = 4, min_chars: int = 16) -> bool:
    """A unit of 1-32 characters repeated ``min_repeats`` times in a row covering at least
    ``min_chars`` characters (``abcabcabcabc...``), or one non-empty line occurring
    ``min_repeats`` times (the same step written over and over)."""
    for unit in range(1, 33):
        repeats = max(min_repeats, -(-min_chars // unit))
        if unit * repeats > len(text):
            break
        if re.search(r"(.{%d})\1{%d,}" % (unit, repeats - 1), text, re.DOTALL):
            return True
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return any(lines.count(line) >= min_repeats for line in set(lines))


def answer_blocks(text: str) -> int:
    """How many ``<answer>`` blocks the completion opens."""
    return text.count(ANSWER_OPEN)


def has_empty_answer(text: str) -> bool:
    """No answer to check: no ``<answer>`` block, or only blocks with nothing but white space
    (an unclosed block counts up to the end of the text)."""
    pieces = text.split(ANSWER_OPEN)[1:]
    return not any(piece.split(ANSWER_CLOSE, 1)[0].strip() for piece in pieces)


# ---------------------------------------------------------------------------------------------
# Per batch


@dataclass(frozen=True)
class BatchStats:
    """One RL batch, as the monitor sees it; rates are fractions of the batch's completions."""

    proxy: float  # mean reward the advantages were computed from (the proxy)
    correct: float  # verified correct rate (the task's exact check)
    mean_len: float  # mean completion length in tokens
    repeated: float
    empty_answer: float
    truncated: float
    multi_answer: float
    format_only: float | None  # among format-rewarded completions, the wrong fraction; None if none was


def batch_stats(texts: list[str], finished: list[bool], lengths: list[int], formats: list[float], corrects: list[float],
                proxy: float, repeat_min: int = 4) -> BatchStats:
    """Rate each exploit shape over one batch of completions (all lists have one entry per completion)."""
    n = max(len(texts), 1)
    formatted = [c for f, c in zip(formats, corrects) if f > 0]
    return BatchStats(
        proxy=float(proxy),
        correct=sum(corrects) / n,
        mean_len=sum(lengths) / n,
        repeated=sum(is_repetitive(t, repeat_min) for t in texts) / n,
        empty_answer=sum(has_empty_answer(t) for t in texts) / n,
        truncated=sum(not f for f in finished) / n,
        multi_answer=sum(answer_blocks(t) > 1 for t in texts) / n,
        format_only=(sum(c == 0 for c in formatted) / len(formatted)) if formatted else None,
    )


# ---------------------------------------------------------------------------------------------
# Trend tests (pure)


def slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys on xs (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def change(xs: list[float], ys: list[float]) -> float:
    """What the least-squares line of ys gains from the first to the last x."""
    return slope(xs, ys) * (xs[-1] - xs[0]) if len(xs) >= 2 else 0.0


def diverging(xs: list[float], proxy: list[float], verified: list[float], rise: float, fall: float) -> bool:
    """The proxy's line gains at least ``rise`` over the window while the verified line loses at
    least ``fall``."""
    return len(xs) >= 2 and change(xs, proxy) >= rise and change(xs, verified) <= -fall


def length_gaming(xs: list[float], mean_len: list[float], verified: list[float], rise: float) -> bool:
    """The mean length's line gains ``rise`` times its value at the window's start while the
    verified line does not rise."""
    if len(xs) < 2:
        return False
    start = sum(mean_len) / len(mean_len) - slope(xs, mean_len) * (xs[-1] - xs[0]) / 2  # the line at xs[0]
    return change(xs, mean_len) >= rise * max(start, 1.0) and change(xs, verified) <= 0.0


def shape_emerged(recent: list[float], baseline: list[float], rate: float, rise: float) -> bool:
    """A shape's mean rate over the recent window reaches ``rate`` and exceeds the baseline
    window's mean by ``rise``."""
    if not recent or not baseline:
        return False
    now, base = sum(recent) / len(recent), sum(baseline) / len(baseline)
    return now >= rate and now - base >= rise


# ---------------------------------------------------------------------------------------------
# The stateful watcher the RL recipe feeds (state is plain JSON, saved with each checkpoint)


class Monitor:
    """Feed it every batch (``observe_batch``) and every probe (``observe_probe``); each returns
    the events that fired. ``state()`` / ``Monitor(cfg, state)`` round-trip exactly."""

    def __init__(self, cfg: MonitorConfig, state: dict | None = None):
        self.cfg = cfg
        s = state or {}
        self.batches: list[dict] = list(s.get("batches", []))  # the last `window` batches: step + BatchStats
        self.baseline: dict[str, list[float]] = {k: list(v) for k, v in s.get("baseline", {}).items()}
        self.probes: list[list[float]] = [list(p) for p in s.get("probes", [])]  # [step, proxy since last probe, verified]
        self.pending: list[float] = list(s.get("pending", [0.0, 0.0]))  # proxy sum and count since the last probe
        self.active: dict[str, int] = dict(s.get("active", {}))  # kind -> observations in a row without it
        self.events: list[dict] = list(s.get("events", []))

    def state(self) -> dict:
        return {"batches": self.batches, "baseline": self.baseline, "probes": self.probes, "pending": self.pending,
                "active": self.active, "events": self.events}

    def _fire(self, step: int, kind: str, on: bool, message: str, values: dict[str, float], rearm: int = 1) -> list[Event]:
        """Record an event at the onset of ``on``; re-arm only after ``rearm`` observations in a
        row without it (hysteresis: a trend hovering at its threshold is one event, not many)."""
        if not on:
            if kind in self.active:
                self.active[kind] += 1
                if self.active[kind] >= rearm:
                    del self.active[kind]
            return []
        if kind in self.active:
            self.active[kind] = 0
            return []
        self.active[kind] = 0
        event = Event(step, kind, message, {k: round(v, 6) for k, v in values.items()})
        self.events.append(asdict(event))
        return [event]

    def observe_batch(self, step: int, stats: BatchStats) -> list[Event]:
        c = self.cfg
        self.batches = [*self.batches, {"step": step, **asdict(stats)}][-c.window:]
        self.pending = [self.pending[0] + stats.proxy, self.pending[1] + 1]
        for shape in SHAPES:
            value = getattr(stats, shape)
            base = self.baseline.setdefault(shape, [])
            if value is not None and len(base) < c.window:
                base.append(value)
        events: list[Event] = []
        if len(self.batches) < c.window:
            return events
        xs = [b["step"] for b in self.batches]
        proxy, correct, lengths = ([b[k] for b in self.batches] for k in ("proxy", "correct", "mean_len"))
        events += self._fire(step, "divergence_batch", diverging(xs, proxy, correct, c.reward_rise, c.accuracy_fall),
                             f"training reward rose {change(xs, proxy):+.3f} while the batches' verified correct rate fell "
                             f"{change(xs, correct):+.3f} over steps {xs[0]}-{xs[-1]}",
                             {"proxy_change": change(xs, proxy), "correct_change": change(xs, correct)}, c.window)
        events += self._fire(step, "length_gaming", length_gaming(xs, lengths, correct, c.length_rise),
                             f"mean completion length rose {change(xs, lengths):+.1f} tokens while the verified correct rate "
                             f"did not rise ({change(xs, correct):+.3f}) over steps {xs[0]}-{xs[-1]}",
                             {"len_change": change(xs, lengths), "correct_change": change(xs, correct)}, c.window)
        for shape in SHAPES:
            recent = [b[shape] for b in self.batches if b[shape] is not None]
            base = self.baseline.get(shape, [])
            on = len(base) >= c.window and len(recent) >= c.window // 2 and shape_emerged(recent, base, c.shape_rate, c.shape_rise)
            now = sum(recent) / len(recent) if recent else 0.0
            then = sum(base) / len(base) if base else 0.0
            events += self._fire(step, shape, on, f"{shape.replace('_', ' ')} in {now:.0%} of completions over steps {xs[0]}-{xs[-1]} "
                                 f"(first {c.window} steps: {then:.0%})", {"rate": now, "baseline": then}, c.window)
        return events

    def observe_probe(self, step: int, verified: float) -> list[Event]:
        """A held-out probe at ``step`` (after that step's batch was observed)."""
        c = self.cfg
        total, count = self.pending
        proxy = total / count if count else (self.probes[-1][1] if self.probes else 0.0)
        self.pending = [0.0, 0.0]
        self.probes = [*self.probes, [float(step), proxy, float(verified)]][-c.probe_window:]
        if len(self.probes) < c.probe_window:
            return []
        xs, px, vs = ([p[i] for p in self.probes] for i in range(3))
        return self._fire(step, "divergence_probe", diverging(xs, px, vs, c.reward_rise, c.accuracy_fall),
                          f"training reward rose {change(xs, px):+.3f} while held-out verified pass@1 fell {change(xs, vs):+.3f} "
                          f"over probes at steps {int(xs[0])}-{int(xs[-1])}",
                          {"proxy_change": change(xs, px), "verified_change": change(xs, vs)}, c.probe_window)

    def metrics(self, stats: BatchStats) -> dict[str, float]:
        """``monitor/*`` metrics of this batch (the probe adds ``monitor/probe_pass@1``)."""
        out = {"monitor/proxy_mean": stats.proxy, "monitor/events": float(len(self.events))}
        for shape in SHAPES:
            value = getattr(stats, shape)
            if value is not None:
                out[f"monitor/{shape}_frac"] = value
        return out


def summary(events: list[dict]) -> dict:
    """What a run's summary says about the monitor: how many events of which kinds, and the first."""
    kinds: dict[str, int] = {}
    for e in events:
        kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
    return {"events": len(events), "kinds": kinds, "first": events[0] if events else None}
