"""Task registry: a name maps to the class that implements it (one file per task).

Classes are imported on first use so that ``r1lab --help`` stays fast and an optional heavy
dependency (reasoning-gym) is only loaded by the tasks that need it.
"""

from __future__ import annotations

import importlib

from r1lab.tasks.base import Example, ProceduralTask, Split, Task

# name -> "module:Class". Add a task: one file in r1lab/tasks/ and one line here.
TASKS: dict[str, str] = {
    "chain": "r1lab.tasks.chain:ChainTask",
    "hops": "r1lab.tasks.hops:HopsTask",
    "code": "r1lab.tasks.code:CodeTask",
    "humaneval": "r1lab.tasks.humaneval:HumanEvalTask",
    "countdown": "r1lab.tasks.countdown:CountdownTask",
    "sort": "r1lab.tasks.sort:SortTask",
}

GYM_PREFIX = "gym:"
JSONL_PREFIX = "jsonl:"
SCENES_PREFIX = "scenes:"
"images of r1lab janus (scenes:und, scenes:gen, scenes:both), for r1lab rl --init <janus run>"


def get_task(name: str, seed: int = 0) -> Task:
    """Build a task by registry name, ``gym:<dataset>`` for any reasoning-gym dataset
    (``gym:<dataset>@key=value,...`` overrides its config), or
    ``jsonl:<path>`` for a file of ``{"question", "answer"}`` rows. ``seed`` (the run's ``--seed``)
    generates reasoning-gym's training pool; procedural tasks draw from the caller's RNG instead."""
    if name.startswith(GYM_PREFIX):
        from r1lab.tasks.gym import GymTask, parse_spec

        dataset, options = parse_spec(name[len(GYM_PREFIX):])
        return GymTask(dataset, seed=seed, options=options)
    if name.startswith(JSONL_PREFIX):
        from r1lab.tasks.jsonl import JsonlTask

        return JsonlTask(name[len(JSONL_PREFIX):])
    if name.startswith(SCENES_PREFIX):
        from r1lab.janus.task import SceneTask

        return SceneTask(name[len(SCENES_PREFIX):])
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; choose one of {sorted(TASKS)}, gym:<reasoning-gym dataset> or jsonl:<path>")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


__all__ = ["Example", "ProceduralTask", "Split", "Task", "TASKS", "get_task", "GYM_PREFIX", "JSONL_PREFIX"]
