"""Checkpoint storage: orbax arrays plus a JSON record, committed by renaming a temp
directory. Private to :mod:`jaxsparse.checkpoint`, which documents the format.

Across processes every process calls the same functions in the same order: orbax writes
each process's shards, process 0 alone creates, renames and removes directories and
writes the record, and orbax's barriers keep the processes in step."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import shutil
import uuid
from collections.abc import Sequence
from itertools import zip_longest
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxsparse.parallel import to_host

PathLike = str | os.PathLike
RECORD = "jaxsparse.json"
VERSION = 1
ROUND = re.compile(r"round_(\d{4,})")


def _describe(path: str, x: Any) -> dict:
    return {"path": path, "shape": list(np.shape(x)), "dtype": str(jnp.result_type(x))}


def _is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


_barriers = itertools.count()  # every process saves in the same order: same names


def _primary() -> bool:
    """Process 0 alone touches the file system's names (temp dirs, renames, the record);
    every process writes its own shards through orbax."""
    return jax.process_index() == 0


def _sync(what: str) -> None:
    """A barrier across processes (orbax's, on the jax.distributed client); no-op alone."""
    if jax.process_count() > 1:
        ocp.multihost.sync_global_processes(f"jaxsparse.checkpoint:{next(_barriers)}:{what}")


def _write(
    directory: PathLike, kind: str, leaves: list[dict], arrays: Sequence[Any], **user: Any
) -> None:
    try:
        user_json = {k: json.loads(json.dumps(v)) for k, v in user.items()}
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint {kind} at {directory}: {list(user)} must be JSON: {e}") from e
    directory = Path(directory).absolute()
    stored, records = {}, []
    for i, x in enumerate(arrays):
        rec: dict[str, Any] = {}
        if _is_key(x):
            rec["key_impl"] = str(jax.random.key_impl(x))
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array) and x.is_fully_addressable and jax.process_count() > 1:
            # one process's own copy (every process holds the same): orbax saves arrays
            # spanning the processes, or host arrays from process 0
            x = np.asarray(x)
        if not isinstance(x, jax.Array):
            # numpy and Python leaves are stored as JAX would hold them (float64 -> float32
            # without x64), the dtype the record names and a restore gives back
            x = np.asarray(x)
            x = x.astype(jax.dtypes.canonicalize_dtype(x.dtype))
        rec.update(shape=list(x.shape), dtype=str(x.dtype), sha256=_digest(np.asarray(to_host(x))))
        if x.size:  # orbax refuses zero-size arrays; the record alone restores them
            stored[f"a{i:05d}"] = x
        records.append(rec)
    record = {
        "format": f"jaxsparse.{kind}",
        "version": VERSION,
        "leaves": leaves,
        "arrays": records,
        **user_json,
    }
    # One temp name for all processes, with no message passed: every process derives it
    # from the same record (the digests make it this save's own).
    token = hashlib.sha256(json.dumps(record).encode()).hexdigest()[:16]
    tmp = directory.with_name(f".{directory.name}.tmp-{token}")
    if _primary():
        directory.parent.mkdir(parents=True, exist_ok=True)
        for stale in directory.parent.glob(f".{directory.name}.tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)  # left by a crashed save of this directory
        tmp.mkdir()
    _sync(f"start {tmp}")
    try:
        if stored:  # every process writes its shards; orbax commits the arrays when all have
            with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckptr:
                ckptr.save(tmp / "arrays", args=ocp.args.StandardSave(stored))
        if _primary():
            with open(tmp / RECORD, "w") as f:
                json.dump(record, f)
                f.flush()
                os.fsync(f.fileno())
            _commit(tmp, directory)
    except BaseException:
        if _primary():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    _sync(f"commit {directory}")  # nobody goes on before the checkpoint is in place


def _commit(tmp: Path, directory: Path) -> None:
    # A non-empty directory cannot be replaced in one rename: move the old one aside
    # first. A crash between the two renames leaves no `directory` (load raises), never a
    # half-written one.
    if directory.exists():
        old = directory.with_name(f".{directory.name}.old-{uuid.uuid4().hex}")
        os.rename(directory, old)
        os.rename(tmp, directory)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, directory)


def _read_record(directory: PathLike, kind: str) -> dict:
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"no checkpoint at {directory}")
    try:
        with open(directory / RECORD) as f:
            record = json.load(f)
    except FileNotFoundError:
        raise ValueError(
            f"checkpoint at {directory} is incomplete: no {RECORD} (an interrupted save?)"
        ) from None
    except (OSError, ValueError) as e:
        raise ValueError(f"checkpoint at {directory} is corrupt: unreadable {RECORD}: {e}") from e
    fmt = record.get("format") if isinstance(record, dict) else None
    if fmt != f"jaxsparse.{kind}" or not {"leaves", "arrays"} <= set(record):
        raise ValueError(
            f"checkpoint at {directory} is not a jaxsparse {kind} checkpoint (format {fmt!r})"
        )
    return record


def _check_like(directory: PathLike, saved: list[dict], like: list[dict]) -> None:
    saved_paths, like_paths = [d["path"] for d in saved], [d["path"] for d in like]
    if saved_paths != like_paths:
        missing = [p for p in saved_paths if p not in like_paths]
        unexpected = [p for p in like_paths if p not in saved_paths]
        first = next((a, b) for a, b in zip_longest(saved_paths, like_paths) if a != b)
        raise ValueError(
            f"checkpoint at {directory} does not match the structure of like: first "
            f"difference at path {first[0]!r} (checkpoint) vs {first[1]!r} (like); "
            f"paths only in the checkpoint {missing[:5]}, only in like {unexpected[:5]}"
        )
    for s, k in zip(saved, like):
        for field in ("shape", "dtype"):
            if s[field] != k[field]:
                show = tuple if field == "shape" else str
                raise ValueError(
                    f"checkpoint at {directory}: leaf '{s['path']}' has {field} "
                    f"{show(s[field])} in the checkpoint, {show(k[field])} in like"
                )


def _target_sharding(x: Any) -> jax.sharding.Sharding:
    sharding = getattr(x, "sharding", None)
    if sharding is None:  # this process's first device: each process reads the whole array
        sharding = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return sharding


def _read_arrays(
    directory: PathLike, record: dict, likes: Sequence[Any], names: Sequence[str]
) -> list[Any]:
    """Reads the stored arrays, checks their digests, and places each like its ``likes``
    entry (``None``: a host numpy array); ``names`` label them in errors."""
    recs = record["arrays"]
    if len(recs) != len(likes):
        raise ValueError(f"checkpoint at {directory} is corrupt: {len(recs)} arrays recorded")
    targets = {}
    for i, (rec, x) in enumerate(zip(recs, likes)):
        if np.prod(rec["shape"]):
            targets[f"a{i:05d}"] = jax.ShapeDtypeStruct(
                rec["shape"], rec["dtype"], sharding=_target_sharding(x)
            )
    try:
        restored = {}
        if targets:
            with ocp.Checkpointer(ocp.StandardCheckpointHandler()) as ckptr:
                restored = ckptr.restore(
                    Path(directory).absolute() / "arrays", args=ocp.args.StandardRestore(targets)
                )
    except Exception as e:  # orbax/tensorstore raise many types for damaged files
        first_line = (str(e).splitlines() or [""])[0][:300]
        raise ValueError(
            f"checkpoint at {directory} is corrupt or unreadable: {type(e).__name__}: {first_line}"
        ) from e
    out = []
    for i, (rec, x, name) in enumerate(zip(recs, likes, names)):
        key = f"a{i:05d}"
        a = restored[key] if key in targets else np.zeros(rec["shape"], rec["dtype"])
        if _digest(np.asarray(to_host(a))) != rec["sha256"]:
            raise ValueError(
                f"checkpoint at {directory} is corrupt: leaf '{name}' does not match the "
                f"digest recorded at save time"
            )
        if x is None:
            out.append(np.asarray(a))
        elif "key_impl" in rec:  # restored onto like's sharding already
            out.append(jax.random.wrap_key_data(jnp.asarray(a), impl=rec["key_impl"]))
        else:
            out.append(_place(a, x))
    return out


def _place(a: Any, like: Any) -> Any:
    """``a`` as the kind of leaf ``like`` is: a numpy array, or a jax array on like's
    sharding (the default device for abstract leaves)."""
    if isinstance(like, np.ndarray | np.generic | int | float | bool | complex):
        return np.asarray(a)
    sharding = _target_sharding(like)
    if isinstance(a, jax.Array) and a.sharding == sharding:
        return a
    # from the host: every process holds the whole value, and an array on one process's
    # device cannot be resharded onto devices of several processes
    return jax.device_put(np.asarray(a), sharding)


def _complete_rounds(root: PathLike) -> list[int]:
    root = Path(root)
    if not root.is_dir():
        return []
    rounds = []
    for p in root.iterdir():
        match = ROUND.fullmatch(p.name)
        if match and (p / RECORD).is_file():
            rounds.append(int(match.group(1)))
    return sorted(rounds)
