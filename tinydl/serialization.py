"""Checkpoints as safetensors files (no pickle): ``td.save(obj, path)`` / ``td.load(path)``.

``obj`` is a nested structure of dicts, lists/tuples, tensors (torch or tinydl) and JSON values
(str, int, float incl. inf/nan, bool, None). Tensors become the safetensors entries (named by
their path in the structure, e.g. ``model/0.weight``); everything else, with a reference to each
tensor entry, is JSON in the file's metadata under ``tinydl``. Dict keys may be str or int (an
optimizer's state is keyed by int); tuples come back as lists. A SHA-256 of the tensor bytes in
the metadata lets ``load`` tell a damaged file from a good one. A plain safetensors file without
tinydl metadata (e.g. model weights written by another tool) loads as a flat dict of tensors.

Writes are atomic: the file is written to a temporary file in the same folder, flushed,
fsync'ed and renamed over the target (``os.replace``), so a crash mid-write leaves the previous
checkpoint intact.

``save_training_checkpoint`` / ``load_training_checkpoint`` bundle model, optimizer and
scheduler state, step/epoch, the RNG states (torch, CUDA, numpy, Python) and the run's config,
so that a resumed run continues bit-identically.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save as _st_save

from tinydl.autograd import Tensor

__all__ = ["save", "load", "CheckpointError", "save_training_checkpoint", "load_training_checkpoint"]

_META_KEY = "tinydl"
_HASH_KEY = "tinydl_sha256"
_FORMAT = 1
_TENSOR, _DICT = "__tinydl_tensor__", "__tinydl_dict__"


class CheckpointError(ValueError):
    """A checkpoint file that is corrupt, truncated, not a safetensors file or not what was asked."""


# ------------------------------------------------------------------------------------------------
# Structure <-> (JSON skeleton, tensors)
# ------------------------------------------------------------------------------------------------

def _encode(obj: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, Tensor):
        obj = obj.data
    if isinstance(obj, torch.Tensor):
        key = path or "tensor"
        while key in tensors:  # two paths that render alike ("a/b" key vs a -> b)
            key += "_"
        # clone: safetensors refuses tensors sharing storage (the optimizer's flat buffers)
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {_TENSOR: key}
    if isinstance(obj, dict):
        items = [(k, _encode(v, f"{path}/{k}" if path else str(k), tensors)) for k, v in obj.items()]
        for k, _ in items:
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"save: dict key {k!r} at {path or '<root>'} must be a str or int")
        if all(isinstance(k, str) for k, _ in items) and _TENSOR not in obj and _DICT not in obj:
            return dict(items)
        return {_DICT: [[k, v] for k, v in items]}
    if isinstance(obj, (list, tuple)):
        return [_encode(v, f"{path}/{i}" if path else str(i), tensors) for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"save: {path or '<root>'} is a {type(obj).__name__}; checkpoints hold tensors, dicts, "
                    "lists and JSON values (str, int, float, bool, None)")


def _decode(obj: Any, tensors: dict[str, torch.Tensor], file: str) -> Any:
    if isinstance(obj, dict):
        if _TENSOR in obj:
            key = obj[_TENSOR]
            if key not in tensors:
                raise CheckpointError(f"{file}: the metadata refers to tensor {key!r}, which the file lacks")
            return tensors[key]
        if _DICT in obj:
            return {k: _decode(v, tensors, file) for k, v in obj[_DICT]}
        return {k: _decode(v, tensors, file) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_decode(v, tensors, file) for v in obj]
    return obj


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for k in sorted(tensors):
        t = tensors[k]
        h.update(k.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# save / load
# ------------------------------------------------------------------------------------------------

def _atomic_write(path: str, data: bytes) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a checkpoint gets the usual file mode
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (POSIX; not possible on every platform)
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def save(obj: Any, path: str | os.PathLike) -> None:
    """Write ``obj`` (a nested dict/list of tensors and JSON values) to ``path`` atomically."""
    path = os.fspath(path)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _encode(obj, "", tensors)
    try:
        meta = json.dumps({"format": _FORMAT, "obj": skeleton}, allow_nan=True)
    except (TypeError, ValueError) as e:
        raise TypeError(f"save: {e}") from None
    data = _st_save(tensors, metadata={_META_KEY: meta, _HASH_KEY: _digest(tensors)})
    _atomic_write(path, data)


def load(path: str | os.PathLike, map_location: str | torch.device | None = None) -> Any:
    """Read what ``save`` wrote: the same nested structure, tensors as torch tensors (on the CPU,
    or on ``map_location``). Raises ``CheckpointError`` naming the file and the problem."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist")
    size = os.path.getsize(path)
    if size < 8:
        raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes; truncated or empty)")
    with open(path, "rb") as f:
        header_len = int.from_bytes(f.read(8), "little")
    if header_len > size - 8:
        raise CheckpointError(f"{path}: truncated or not a safetensors file (header says {header_len} bytes, "
                              f"the file has {size - 8} after the length)")
    try:
        tensors = {}
        with safe_open(path, framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            for k in f.keys():
                tensors[k] = f.get_tensor(k)
    except Exception as e:  # safetensors' own errors: bad header JSON, offsets past the end...
        raise CheckpointError(f"{path}: not a valid safetensors file ({type(e).__name__}: {e})") from None
    if _HASH_KEY in metadata and _digest(tensors) != metadata[_HASH_KEY]:
        raise CheckpointError(f"{path}: tensor data is corrupt (checksum mismatch)")
    if map_location is not None:
        tensors = {k: v.to(map_location) for k, v in tensors.items()}
    if _META_KEY not in metadata:
        return tensors
    try:
        meta = json.loads(metadata[_META_KEY])
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: tinydl metadata is not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        fmt = meta.get("format") if isinstance(meta, dict) else meta
        raise CheckpointError(f"{path}: unknown tinydl checkpoint format {fmt!r}")
    return _decode(meta["obj"], tensors, path)


# ------------------------------------------------------------------------------------------------
# Training checkpoints
# ------------------------------------------------------------------------------------------------

_TRAINING_KIND = "tinydl.training_checkpoint"


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    py_version, py_internal, py_gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "keys": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"].to(torch.uint8))
    if "numpy" in state:
        s = state["numpy"]
        np.random.set_state((s["name"], s["keys"].numpy().astype(np.uint32), s["pos"], s["has_gauss"],
                             s["cached_gaussian"]))
    if "python" in state:
        s = state["python"]
        random.setstate((s["version"], tuple(s["internal"]), s["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([t.to(torch.uint8) for t in state["cuda"]])


def save_training_checkpoint(path, *, model=None, optimizer=None, scheduler=None, step: int = 0, epoch: int = 0,
                             config: dict | None = None, extra: dict | None = None) -> None:
    """Everything a run needs to resume exactly, written atomically to ``path``."""
    obj = {"kind": _TRAINING_KIND, "step": int(step), "epoch": int(epoch), "config": config, "extra": extra,
           "rng": _rng_state(),
           "model": None if model is None else dict(model.state_dict()),
           "optimizer": None if optimizer is None else optimizer.state_dict(),
           "scheduler": None if scheduler is None else scheduler.state_dict()}
    save(obj, path)


def load_training_checkpoint(path, *, model=None, optimizer=None, scheduler=None, restore_rng: bool = True,
                             strict: bool = True) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG states from ``path`` (whichever are given) and
    return the checkpoint dict (``step``, ``epoch``, ``config``, ``extra`` and the raw states).

    Everything is read and checked before anything is changed: a missing part raises
    ``CheckpointError``, a model mismatch raises ``RuntimeError`` from ``load_state_dict``."""
    ckpt = load(path)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != _TRAINING_KIND:
        raise CheckpointError(f"{path}: not a tinydl training checkpoint (use tinydl.load for plain ones)")
    return restore_training_state(ckpt, path, model=model, optimizer=optimizer, scheduler=scheduler,
                                  restore_rng=restore_rng, strict=strict)


def restore_training_state(ckpt: dict[str, Any], path, *, model=None, optimizer=None, scheduler=None,
                           restore_rng: bool = True, strict: bool = True) -> dict[str, Any]:
    """The restoring half of ``load_training_checkpoint``, for a checkpoint dict already read
    (e.g. to build the model from its config first); ``path`` only names it in errors."""
    for name, target in (("model", model), ("optimizer", optimizer), ("scheduler", scheduler)):
        if target is not None and ckpt.get(name) is None:
            raise CheckpointError(f"{path}: the checkpoint has no {name} state to restore")
    if model is not None:
        model.load_state_dict(ckpt["model"], strict=strict)
    if optimizer is not None:
        optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if restore_rng:
        _set_rng_state(ckpt["rng"])
    return ckpt
