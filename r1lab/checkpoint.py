"""Run-folder checkpoints that survive crashes and resume bit-identically.

Layout, one folder per saved optimizer step under the run folder::

    <run>/checkpoints/step_<N>/
        model.safetensors      model.state_dict() (parameters and persistent buffers)
        optimizer.pt           optimizer.state_dict() via torch.save (optional)
        <name>.safetensors     extra models, e.g. ``ref_model`` (optional)
        state.json             step, user state, RNG states, sha256 of every file above

The promise is exact resume: a run killed at any instant (SIGKILL included) and resumed from its
last good checkpoint ends bit-identical, on CPU, to a run that was never interrupted. Three things
make that hold:

* **Atomic saves.** A checkpoint is written into ``step_<N>.tmp-<pid>``, every file and the folder
  are fsynced, and only then is the folder renamed to ``step_<N>`` (a rename is atomic on POSIX).
  A crash mid-save leaves a ``.tmp-`` folder that loading ignores (with a warning) and the next
  save removes; older checkpoints are pruned only after the new one is durable.
* **Verified loads.** ``state.json`` is written last and records the size and sha256 of every
  other file, so a truncated or bit-flipped file is detected before torch parses it, and
  ``load_latest`` falls back to the previous checkpoint with a warning naming the bad file.
* **Complete state.** Besides weights and optimizer moments, ``state.json`` holds the global RNG
  states (Python ``random``, numpy, torch CPU, and CUDA when it was in use), any private
  generators the caller names, and the caller's JSON-able state (data position, counters, LR
  scheduler ``state_dict()``).

Resume recipe (a recipe's loop reads top to bottom; nothing here is a callback)::

    ckpt = checkpoint.load_latest(run_dir)
    if ckpt is not None:
        checkpoint.apply(model, ckpt, optimizer)
        checkpoint.restore_rng(ckpt.rng, generators={"data": data_rng})
        scheduler.load_state_dict(ckpt.state["scheduler"]); step = ckpt.step
    ...
    checkpoint.save(run_dir, step, model, optimizer, state={"scheduler": scheduler.state_dict()},
                    generators={"data": data_rng}, keep=cfg.keep_checkpoints)

Departures from the usual ``torch.save(everything)``: no pickle for weights (safetensors, so a
checkpoint from elsewhere cannot run code), tied weights stored once and re-aliased on load, and
``optimizer.pt`` read back with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import nn

FORMAT = "r1lab-checkpoint/1"
MODEL_FILE = "model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"
STATE_FILE = "state.json"
# safetensors metadata key listing tied names: {"head.weight": "embed.weight"}.
ALIASES_KEY = "r1lab.aliases"

_STEP_RE = re.compile(r"^step_(\d+)$")
_TMP_RE = re.compile(r"^step_(\d+)\.(?:tmp|old)-(\d+)$")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_RESERVED = {"model", "optimizer", "state"}

RNG = Union[torch.Generator, random.Random, np.random.Generator]
"the generator kinds ``capture_rng`` and ``restore_rng`` accept by name"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, read, or applied. The message is one line naming the
    path, fit to print to a user as is."""


class CheckpointWarning(UserWarning):
    """A checkpoint folder was skipped (corrupt, truncated, or an unfinished save)."""



@contextlib.contextmanager
def atomic_folder(out: Path) -> Iterator[Path]:
    """Build a folder in a temporary sibling and rename it to ``out`` only when the block
    succeeds: a failure (bad input, a full disk, Ctrl-C) leaves nothing at ``out``. ``out`` must
    be absent or an empty folder (the caller checks and says so)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            out.rmdir()  # empty, checked by the caller
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

@dataclass
class Checkpoint:
    """One verified checkpoint, loaded onto the CPU."""

    path: Path
    "the ``step_<N>`` folder"
    step: int
    "optimizer steps completed when it was saved"
    model_state: dict[str, torch.Tensor]
    "model.state_dict(); tied names map to the same tensor"
    optimizer_state: dict[str, Any] | None
    "optimizer.state_dict(), or None when no optimizer was saved"
    extra_states: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    "state dicts of the extra models, by name (e.g. ``ref_model``)"
    state: dict[str, Any] = field(default_factory=dict)
    "the caller's JSON-able state, as passed to ``save`` (tuples come back as lists)"
    rng: dict[str, Any] = field(default_factory=dict)
    "RNG states as returned by ``capture_rng``; pass to ``restore_rng`` (rank 0's in a sharded checkpoint)"
    rng_ranks: list[dict[str, Any]] = field(default_factory=list)
    "a sharded checkpoint's RNG states, one per rank of the run that wrote it; empty otherwise"
    world_size: int = 0
    "ranks that wrote a sharded (torch.distributed.checkpoint) checkpoint; 0 for a one-process one"

    @property
    def sharded(self) -> bool:
        """Written by ``save_sharded``: weights and optimizer live in DCP shards, read by ``apply``."""
        return self.world_size > 0


# ---------------------------------------------------------------------------------------------
# RNG state


def _b64(t: torch.Tensor) -> str:
    return base64.b64encode(t.numpy().tobytes()).decode("ascii")


def _unb64(s: str) -> torch.Tensor:
    # bytearray: torch.frombuffer warns on read-only buffers.
    return torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)


def _python_state(r: random.Random | None) -> dict[str, Any]:
    version, internal, gauss_next = (r.getstate() if r is not None else random.getstate())
    return {"version": version, "state": list(internal), "gauss_next": gauss_next}


def _set_python_state(d: Mapping[str, Any], r: random.Random | None) -> None:
    st = (d["version"], tuple(d["state"]), d["gauss_next"])
    (r.setstate if r is not None else random.setstate)(st)


def _capture_one(g: RNG) -> dict[str, Any]:
    if isinstance(g, torch.Generator):
        return {"kind": "torch", "device": str(g.device), "state": _b64(g.get_state())}
    if isinstance(g, random.Random):
        return {"kind": "python", **_python_state(g)}
    if isinstance(g, np.random.Generator):
        # bit_generator.state is a dict of Python ints and strings: JSON-able as is.
        return {"kind": "numpy", "state": g.bit_generator.state}
    raise TypeError(f"cannot capture RNG state of {type(g).__name__}")


def capture_rng(generators: Mapping[str, RNG] | None = None) -> dict[str, Any]:
    """JSON-able snapshot of the global RNGs (Python ``random``, numpy's legacy global state,
    torch CPU, and every CUDA device if CUDA has been initialised) plus the named private
    generators (``torch.Generator``, ``random.Random`` or ``numpy.random.Generator``)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    out: dict[str, Any] = {
        "python": _python_state(None),
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": _b64(torch.get_rng_state()),
        "generators": {name: _capture_one(g) for name, g in (generators or {}).items()},
    }
    # Only when CUDA is already in use: querying it would otherwise initialise a device context.
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["torch_cuda"] = [_b64(s) for s in torch.cuda.get_rng_state_all()]
    return out


def restore_rng(d: Mapping[str, Any], generators: Mapping[str, RNG] | None = None) -> None:
    """Put back the RNG states captured by ``capture_rng``. Every generator named here must have
    been captured under the same name and kind; captured generators not named here are ignored."""
    _set_python_state(d["python"], None)
    n = d["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(_unb64(d["torch"]))
    if "torch_cuda" in d and torch.cuda.is_available():
        states = d["torch_cuda"]
        if len(states) != torch.cuda.device_count():
            raise CheckpointError(f"checkpoint RNG state covers {len(states)} CUDA devices, "
                                  f"this process sees {torch.cuda.device_count()}")
        torch.cuda.set_rng_state_all([_unb64(s) for s in states])
    saved = d.get("generators", {})
    for name, g in (generators or {}).items():
        if name not in saved:
            raise CheckpointError(f"checkpoint RNG state has no generator named {name!r} "
                                  f"(it has: {', '.join(sorted(saved)) or 'none'})")
        s = saved[name]
        want = _capture_one(g)["kind"]
        if s["kind"] != want:
            raise CheckpointError(f"checkpoint generator {name!r} is a {s['kind']} generator, "
                                  f"not a {want} one")
        if isinstance(g, torch.Generator):
            g.set_state(_unb64(s["state"]))
        elif isinstance(g, random.Random):
            _set_python_state(s, g)
        else:
            g.bit_generator.state = s["state"]


# ---------------------------------------------------------------------------------------------
# Tensors on disk


def _dedup(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split a state dict into tensors safetensors accepts and an alias map for tied names.

    safetensors refuses tensors that share memory. Names that are the very same view (an
    embedding tied to the output head) are stored once and recorded as aliases; names that share
    storage as different views (rare: slices of a fused weight) get a contiguous private copy.
    """
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    seen_view: dict[tuple, str] = {}
    storage_count: dict[tuple, int] = {}
    for t in sd.values():
        if t.numel():
            k = (t.device, t.untyped_storage().data_ptr())
            storage_count[k] = storage_count.get(k, 0) + 1
    for name, t in sd.items():
        t = t.detach()
        if t.numel():
            view = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape),
                    t.stride(), t.dtype)
            if view in seen_view:
                aliases[name] = seen_view[view]
                continue
            seen_view[view] = name
            shared = storage_count[(t.device, t.untyped_storage().data_ptr())] > 1
        else:
            shared = False
        t = t.to("cpu").contiguous()
        tensors[name] = t.clone() if shared else t
    return tensors, aliases


def _save_tensors(path: Path, sd: Mapping[str, torch.Tensor]) -> None:
    tensors, aliases = _dedup(sd)
    meta = {"format": "pt"}
    if aliases:
        meta[ALIASES_KEY] = json.dumps(aliases, sort_keys=True)
    safetensors.torch.save_file(tensors, str(path), metadata=meta)


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safetensors.safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            out = {k: f.get_tensor(k) for k in f.keys()}
        aliases = json.loads(meta.get(ALIASES_KEY, "{}"))
    except Exception as e:  # safetensors raises its own error types; the message is what counts
        raise CheckpointError(f"{path} is not a readable safetensors file: {_one_line(e)}") from e
    for name, target in aliases.items():
        out[name] = out[target]
    return out


# ---------------------------------------------------------------------------------------------
# Durable file-system steps


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return " ".join(str(e).split()) or type(e).__name__


def fsync_path(path: Path) -> None:
    # Opening read-only and fsyncing flushes a file written by someone else's writer (safetensors,
    # torch.save) and, on a folder, makes its entries (new names, renames) durable.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def checkpoints_dir(root: Path) -> Path:
    """Where the checkpoints of the run folder ``root`` live."""
    return Path(root) / "checkpoints"


def _step_dirs(root: Path) -> list[tuple[int, Path]]:
    """(step, folder) of every finished-looking ``step_<N>`` folder, oldest first."""
    d = checkpoints_dir(root)
    if not d.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in d.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return sorted(found)


def _leftovers(root: Path) -> list[tuple[int, Path]]:
    """(pid, folder) of unfinished saves (``.tmp-``) and half-replaced folders (``.old-``)."""
    d = checkpoints_dir(root)
    if not d.is_dir():
        return []
    return [(int(m.group(2)), p) for p in d.iterdir() if (m := _TMP_RE.match(p.name))]


# ---------------------------------------------------------------------------------------------
# Save


def save(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: Mapping[str, Any] | None = None,
    extra_models: Mapping[str, nn.Module | Mapping[str, torch.Tensor]] | None = None,
    keep: int | None = 3,
    generators: Mapping[str, RNG] | None = None,
) -> Path:
    """Atomically write ``root/checkpoints/step_<step>/`` and return its path.

    ``root`` is the run folder. ``state`` is JSON-able caller state (data position, counters, a
    scheduler's ``state_dict()``); NaN and infinities round-trip as Python's JSON extensions.
    ``extra_models`` are saved as ``<name>.safetensors``. The global RNGs and the named
    ``generators`` are captured into ``state.json``. An existing folder for the same step is
    replaced. Afterwards only the ``keep`` newest checkpoints remain (``None`` keeps all); the one
    just written is never removed. On any failure the previous checkpoints are untouched, the
    temporary folder is removed, and ``CheckpointError`` names the path.
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    extras = dict(extra_models or {})
    for name in extras:
        if not _NAME_RE.match(name) or name in _RESERVED:
            raise ValueError(f"extra model name {name!r} must be a plain file stem other than "
                             f"{', '.join(sorted(_RESERVED))}")
    user_state = dict(state or {})
    try:
        # Fail before touching the disk; the round trip also normalises tuples to lists.
        user_state = json.loads(json.dumps(user_state))
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint state must be JSON-able: {e}") from e
    rng = capture_rng(generators)

    ckdir = checkpoints_dir(root)
    final = ckdir / f"step_{step}"
    tmp = ckdir / f"step_{step}.tmp-{os.getpid()}"
    try:
        ckdir.mkdir(parents=True, exist_ok=True)
        _remove_stale_leftovers(root)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
        files: list[str] = []
        _save_tensors(tmp / MODEL_FILE, model.state_dict())
        files.append(MODEL_FILE)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
            files.append(OPTIMIZER_FILE)
        for name, m in extras.items():
            sd = m.state_dict() if isinstance(m, nn.Module) else m
            _save_tensors(tmp / f"{name}.safetensors", sd)
            files.append(f"{name}.safetensors")
        checksums = {}
        for fname in files:
            fsync_path(tmp / fname)
            checksums[fname] = {"bytes": (tmp / fname).stat().st_size, "sha256": _sha256(tmp / fname)}
        meta = {
            "format": FORMAT,
            "step": step,
            "saved_at": time.time(),
            "extra_models": sorted(extras),
            "state": user_state,
            "rng": rng,
            "files": checksums,
        }
        _seal(tmp, final, meta)
    except (OSError, safetensors.SafetensorError) as e:
        # safetensors reports I/O failures (a full disk) as its own error type, not OSError.
        shutil.rmtree(tmp, ignore_errors=True)
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        raise CheckpointError(f"could not save checkpoint {final}: {_one_line(e)}{where}") from e
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep is not None:
        _prune(root, keep, final)
    return final


def _seal(tmp: Path, final: Path, meta: dict[str, Any]) -> None:
    """Write ``state.json`` last (its checksums vouch for every other file), fsync it and the
    folder, then publish the folder under its final name."""
    with open(tmp / STATE_FILE, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    fsync_path(tmp)
    _publish(tmp, final)


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final``; an existing ``final`` is moved aside first, because rename
    cannot replace a non-empty folder. If we crash between the two renames, ``final`` is missing
    and loading falls back to the previous step, which is still intact (pruning comes later)."""
    old = None
    if final.exists():
        old = final.with_name(f"{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.rename(final, old)
    os.rename(tmp, final)
    fsync_path(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _remove_stale_leftovers(root: Path) -> None:
    # Folders of crashed saves; a live process's (a concurrent save) is left alone.
    for pid, p in _leftovers(root):
        if pid == os.getpid() or not _pid_alive(pid):
            shutil.rmtree(p, ignore_errors=True)


def _prune(root: Path, keep: int, newest: Path) -> None:
    dirs = _step_dirs(root)
    keepers = {p for _, p in dirs[-keep:]} | {newest}
    for _, p in dirs:
        if p not in keepers:
            # Removal failure only costs disk space; the new checkpoint is already durable.
            shutil.rmtree(p, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Load


def latest_step(root: Path) -> int | None:
    """Highest step with a finished-looking checkpoint folder (has ``state.json``), without
    verifying checksums; None when there is none."""
    steps = [s for s, p in _step_dirs(root) if (p / STATE_FILE).is_file()]
    return steps[-1] if steps else None


def load(path: Path) -> Checkpoint:
    """Read and verify one ``step_<N>`` folder. Raises ``CheckpointError`` naming the first
    missing, truncated or corrupt file."""
    path = Path(path)
    sf = path / STATE_FILE
    if not sf.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: {STATE_FILE} is missing")
    try:
        meta = json.loads(sf.read_text(encoding="utf-8"))
        step, files, user_state, rng = meta["step"], meta["files"], meta["state"], meta["rng"]
        extras = meta.get("extra_models", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{sf} is corrupt: {_one_line(e)}") from e
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{sf} has format {meta.get('format')!r}, expected {FORMAT!r}")
    for fname, info in files.items():
        fp = path / fname
        if not fp.is_file():
            raise CheckpointError(f"{fp} is missing")
        size = fp.stat().st_size
        if size != info["bytes"]:
            raise CheckpointError(f"{fp} is truncated or damaged: {size} bytes, expected {info['bytes']}")
        if _sha256(fp) != info["sha256"]:
            raise CheckpointError(f"{fp} is corrupt: sha256 does not match {STATE_FILE}")
    sharded = meta.get("sharded")
    if sharded:  # weights and optimizer stay in their DCP shards until ``apply`` reads them
        return Checkpoint(path=path, step=int(step), model_state={}, optimizer_state=None, state=user_state, rng=rng,
                          rng_ranks=list(meta.get("rng_ranks", [])), world_size=int(sharded["world_size"]))
    if MODEL_FILE not in files:
        raise CheckpointError(f"{sf} lists no {MODEL_FILE}")
    opt_state = None
    if OPTIMIZER_FILE in files:
        try:
            opt_state = torch.load(path / OPTIMIZER_FILE, map_location="cpu", weights_only=True)
        except Exception as e:  # unpickling errors come in many types
            raise CheckpointError(f"{path / OPTIMIZER_FILE} is unreadable: {_one_line(e)}") from e
    return Checkpoint(
        path=path,
        step=int(step),
        model_state=_load_tensors(path / MODEL_FILE),
        optimizer_state=opt_state,
        extra_states={name: _load_tensors(path / f"{name}.safetensors") for name in extras},
        state=user_state,
        rng=rng,
    )


def load_latest(root: Path) -> Checkpoint | None:
    """Newest checkpoint of the run folder ``root`` that verifies, or None when there is none.
    Corrupt or partial checkpoints and unfinished saves are skipped with a ``CheckpointWarning``
    naming the file."""
    for pid, p in _leftovers(root):
        if not _pid_alive(pid):  # a live process's folder is a save in progress, not damage
            warnings.warn(f"ignoring unfinished checkpoint folder {p} (an interrupted save)",
                          CheckpointWarning, stacklevel=2)
    for _, p in reversed(_step_dirs(root)):
        try:
            return load(p)
        except CheckpointError as e:
            warnings.warn(f"skipping checkpoint: {e}", CheckpointWarning, stacklevel=2)
    return None


# ---------------------------------------------------------------------------------------------
# Apply


def _shape(t: torch.Tensor) -> str:
    return "(" + ", ".join(str(s) for s in t.shape) + ")"


def _names(keys: list[str], limit: int = 3) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" (+{len(keys) - limit} more)" if len(keys) > limit else "")


def load_model_state(model: nn.Module, sd: Mapping[str, torch.Tensor], source: Path) -> None:
    """Strict ``load_state_dict`` whose failure is one line: ``CheckpointError`` naming ``source``
    and the first mismatched key, instead of torch's multi-line report."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    head = f"checkpoint {source} does not fit the model:"
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        raise CheckpointError(f"{head} {'; '.join(parts)}")
    for k, t in own.items():
        if sd[k].shape != t.shape:
            raise CheckpointError(f"{head} {k} has shape {_shape(sd[k])} in the checkpoint and "
                                  f"{_shape(t)} in the model")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{head} {_one_line(e)}") from e


def apply(
    model: nn.Module,
    ckpt: Checkpoint,
    optimizer: torch.optim.Optimizer | None = None,
    extra_models: Mapping[str, nn.Module] | None = None,
) -> None:
    """Load the checkpoint's weights into ``model`` (and ``extra_models`` by name) and its state
    into ``optimizer``. RNG and caller state are left to the caller (``restore_rng``,
    ``ckpt.state``) so that nothing global changes behind its back.

    Either kind of checkpoint fits either kind of model: a sharded one (``save_sharded``) is read
    through torch.distributed.checkpoint into a plain, DDP or FSDP2 model at any world size (a
    plain model in one process included: resharding N -> 1, export); a one-process one into an
    FSDP2 model is scattered from its full tensors."""
    if ckpt.sharded:
        _apply_sharded(model, ckpt, optimizer, extra_models)
        return
    fsdp = _is_fsdp(model)
    if fsdp:  # FSDP2 parameters are DTensor shards: scatter the full tensors (optimizer too)
        _apply_full_to_fsdp(model, ckpt, optimizer)
    else:
        load_model_state(model, ckpt.model_state, ckpt.path / MODEL_FILE)
    for name, m in (extra_models or {}).items():
        if name not in ckpt.extra_states:
            raise CheckpointError(f"checkpoint {ckpt.path} has no extra model {name!r}")
        load_model_state(m, ckpt.extra_states[name], ckpt.path / f"{name}.safetensors")
    if optimizer is not None and not fsdp:
        if ckpt.optimizer_state is None:
            raise CheckpointError(f"checkpoint {ckpt.path} has no {OPTIMIZER_FILE}")
        try:
            optimizer.load_state_dict(ckpt.optimizer_state)
        except (ValueError, KeyError, RuntimeError) as e:
            raise CheckpointError(f"checkpoint {ckpt.path / OPTIMIZER_FILE} does not fit the "
                                  f"optimizer: {_one_line(e)}") from e


# ---------------------------------------------------------------------------------------------
# Sharded checkpoints (torch.distributed.checkpoint), written by every rank of a torchrun job
#
# The folder is the same ``step_<N>`` as above, published the same way (temporary folder, fsync,
# rename), with DCP's files in place of model.safetensors and optimizer.pt: one ``__<rank>_0.distcp``
# per rank and DCP's ``.metadata``. Rank 0 writes ``state.json`` last, with the checksums of every
# rank's file and every rank's RNG states, so that verification and "newest good checkpoint" work
# unchanged. All ranks must see one file system (a shared one across nodes).


def _is_fsdp(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def _state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer | None,
                 extra_models: Mapping[str, nn.Module] | None) -> dict[str, Any]:
    """What DCP saves and loads: model and optimizer state keyed by parameter names (sharded
    DTensors under FSDP2, plain tensors otherwise), and the extra models' state dicts."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    if optimizer is not None:
        msd, osd = get_state_dict(model, optimizer)
        out: dict[str, Any] = {"model": msd, "optim": osd}
    else:
        out = {"model": get_model_state_dict(model)}
    for name, m in (extra_models or {}).items():
        out[f"extra.{name}"] = m.state_dict()
    return out


def save_sharded(
    root: Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    state: Mapping[str, Any] | None = None,
    extra_models: Mapping[str, nn.Module] | None = None,
    keep: int | None = 3,
    generators: Mapping[str, RNG] | None = None,
) -> Path:
    """``save`` for a torchrun job: every rank calls it (a collective) and writes its own shard
    of ``model`` (plain, the module inside DDP, or FSDP2) and ``optimizer``; the folder appears
    atomically once all shards and rank 0's ``state.json`` are durable. Every rank's RNG states
    are kept (``Checkpoint.rng_ranks``)."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp

    if keep is not None and keep < 1:
        raise ValueError(f"keep must be >= 1 or None, got {keep}")
    try:
        user_state = json.loads(json.dumps(dict(state or {})))
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint state must be JSON-able: {e}") from e
    rank, world = dist.get_rank(), dist.get_world_size()
    rngs: list[Any] = [None] * world
    dist.all_gather_object(rngs, capture_rng(generators))
    pid = [os.getpid()]
    dist.broadcast_object_list(pid, src=0)  # one temporary folder for all ranks: rank 0's
    ckdir = checkpoints_dir(root)
    final = ckdir / f"step_{step}"
    tmp = ckdir / f"step_{step}.tmp-{pid[0]}"
    try:
        if rank == 0:
            ckdir.mkdir(parents=True, exist_ok=True)
            _remove_stale_leftovers(root)
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir()
        dist.barrier()
        dcp.save(_state_dicts(model, optimizer, extra_models), checkpoint_id=str(tmp))
        dist.barrier()
        if rank == 0:
            checksums = {}
            for fp in sorted(tmp.iterdir()):
                fsync_path(fp)
                checksums[fp.name] = {"bytes": fp.stat().st_size, "sha256": _sha256(fp)}
            meta = {
                "format": FORMAT,
                "step": step,
                "saved_at": time.time(),
                "extra_models": sorted(extra_models or {}),
                "state": user_state,
                "rng": rngs[0],
                "rng_ranks": rngs,
                "sharded": {"world_size": world, "library": "torch.distributed.checkpoint"},
                "files": checksums,
            }
            _seal(tmp, final, meta)
            if keep is not None:
                _prune(root, keep, final)
    except OSError as e:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"could not save checkpoint {final}: {_one_line(e)}") from e
    except BaseException:
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    dist.barrier()  # nobody reads the new checkpoint before rank 0 has published it
    return final


def _apply_sharded(model: nn.Module, ckpt: Checkpoint, optimizer: torch.optim.Optimizer | None,
                   extra_models: Mapping[str, nn.Module] | None) -> None:
    """Read a sharded checkpoint through DCP into ``model``/``optimizer`` of any world size (in
    one process DCP reads without a process group): DCP reshards by parameter name."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict, set_state_dict

    for name in extra_models or {}:
        if not _dcp_has(ckpt.path, f"extra.{name}."):
            raise CheckpointError(f"checkpoint {ckpt.path} has no extra model {name!r}")
    sd = _state_dicts(model, optimizer, extra_models)
    if optimizer is not None:
        # DCP gives a fresh optimizer state for every parameter; one that never had a gradient
        # when the checkpoint was saved (AdamW skips it) has none there: it stays stateless, as
        # after a one-process resume, instead of failing the load on its missing keys.
        saved = _dcp_keys(ckpt.path)
        stateless = [fqn for fqn, st in sd["optim"]["state"].items() if not all(f"optim.state.{fqn}.{k}" in saved for k in st)]
        for fqn in stateless:
            del sd["optim"]["state"][fqn]
    try:
        with warnings.catch_warnings():  # one plain process (resharding N -> 1, export) is intended here
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(sd, checkpoint_id=str(ckpt.path))
    except Exception as e:  # DCP wraps a missing key or a shape mismatch in its own error types
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit the model: {_one_line(e)}"[:400]) from e
    if optimizer is not None:
        set_state_dict(model, optimizer, model_state_dict=sd["model"], optim_state_dict=sd["optim"],
                       options=StateDictOptions(strict=not stateless))
        params = dict(model.named_parameters())
        for fqn in stateless:
            optimizer.state.pop(params[fqn], None)
    else:
        set_model_state_dict(model, sd["model"])
    for name, m in (extra_models or {}).items():
        m.load_state_dict(sd[f"extra.{name}"])


def _dcp_keys(path: Path) -> set[str]:
    """The flattened state-dict keys a DCP checkpoint folder holds."""
    from torch.distributed.checkpoint import FileSystemReader

    return set(FileSystemReader(str(path)).read_metadata().state_dict_metadata)


def _dcp_has(path: Path, prefix: str) -> bool:
    return any(k.startswith(prefix) for k in _dcp_keys(path))


def _apply_full_to_fsdp(model: nn.Module, ckpt: Checkpoint, optimizer: torch.optim.Optimizer | None) -> None:
    """A one-process checkpoint into an FSDP2 model: each rank keeps its shard of the full
    tensors. ``optimizer.pt`` numbers parameters in param-group order; DCP names them."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    osd = None
    if optimizer is not None:
        if ckpt.optimizer_state is None:
            raise CheckpointError(f"checkpoint {ckpt.path} has no {OPTIMIZER_FILE}")
        names = {id(p): n for n, p in model.named_parameters()}
        fqn = [names[id(p)] for g in optimizer.param_groups for p in g["params"]]
        saved = ckpt.optimizer_state
        osd = {"state": {fqn[int(i)]: st for i, st in saved["state"].items()},
               "param_groups": [{**g, "params": [fqn[int(i)] for i in g["params"]]} for g in saved["param_groups"]]}
    try:
        set_state_dict(model, optimizer if optimizer is not None else [], model_state_dict=dict(ckpt.model_state),
                       optim_state_dict=osd or {}, options=StateDictOptions(full_state_dict=True))
    except (ValueError, KeyError, RuntimeError, IndexError) as e:
        raise CheckpointError(f"checkpoint {ckpt.path} does not fit the model: {_one_line(e)}") from e


__all__ = [
    "Checkpoint", "CheckpointError", "CheckpointWarning", "apply", "capture_rng",
    "checkpoints_dir", "latest_step", "load", "load_latest", "load_model_state", "restore_rng",
    "save", "save_sharded",
]
