"""Where eossl writes: one rule for what may be replaced, atomic writes, and cleanup after kills.

The rule (used by the API and the CLI alike, through :func:`claim_output`):

- a path that does not exist, or an empty folder, is written;
- eossl's own output of the same kind (embeddings it saved, a probe table it wrote) is replaced,
  atomically, so re-running a notebook cell works;
- a file eossl did not write is replaced only with ``overwrite=True`` (``--overwrite``);
- a folder holding anything that is not eossl's output is never deleted, not even with
  ``overwrite=True``: the user's files matter more than our convenience.

Every write goes to a temporary name beside the target (``.NAME.pidPID.XXXX.tmp``) and is renamed
over it, so a killed process leaves the previous file whole. The temporary files of killed writes
are removed by the next write to the same place (:func:`remove_stale_temps`); the process id in
the name tells a dead writer's leftovers from a live one's work in progress.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

from eossl.errors import ParameterError

# Written into the attributes of every embeddings file / store eossl saves, so it can tell its own
# output from a user's file of the same name.
OUTPUT_MARKER = "eossl_output"
_PID = re.compile(r"^pid(\d+)$")


def umask_mode() -> int:
    """The mode a normal open() would give (mkstemp makes files private to the owner)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


# ----------------------------------------------------------------------------- temporary files

def temp_prefix(path: Path) -> str:
    return f".{path.name}.pid{os.getpid()}."


def _writer_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def stale_temps(path) -> list[Path]:
    """Temporary files / folders of writes to ``path`` whose writer is gone (killed, crashed), and
    those of eossl versions that did not put the process id in the name."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = []
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        parts = tmp.name[len(path.name) + 2:-len(".tmp")].split(".")
        match = _PID.match(parts[0]) if parts else None
        if match is None or not _writer_alive(int(match.group(1))):
            found.append(tmp)
    return found


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def remove_stale_temps(path) -> int:
    """Remove the leftovers of interrupted writes to ``path``; returns how many were removed. A
    half-swapped folder (``.NAME.old`` with ``NAME`` gone) is put back first, not deleted."""
    path = Path(path)
    old = path.with_name(f".{path.name}.old")
    if old.exists():
        if not path.exists():
            os.replace(old, path)  # the swap was cut between its two renames: the old copy is the good one
        else:
            _remove(old)
    removed = 0
    for tmp in stale_temps(path):
        _remove(tmp)
        removed += 1
    return removed


# ----------------------------------------------------------------------------- atomic writes

def atomic_write_bytes(path, data: bytes) -> None:
    """Write to a temporary file beside ``path``, flush to disk, then rename over ``path``."""
    atomic_write_file(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_file(path, write) -> None:
    """``write(tmp_path)`` (e.g. a netCDF or safetensors writer), fsync, rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_stale_temps(path)


def atomic_write_dir(path, write) -> None:
    """``write(tmp_dir)`` into a temporary folder beside ``path``, then swap it in; a failure leaves
    any previous ``path`` as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
    old = path.with_name(f".{path.name}.old")
    try:
        shutil.rmtree(tmp)
        write(tmp)
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        if old.exists() and not path.exists():
            os.replace(old, path)  # put the good copy back
        raise
    _remove(old)
    remove_stale_temps(path)


# ----------------------------------------------------------------------------- the rule

def _zarr_entries_ours(path: Path) -> bool:
    """A Zarr (format 2) store whose every top-level entry is a Zarr file or an array/group its
    consolidated metadata names, with eossl's marker (or an ``embedding`` array) in it."""
    meta_file = path / ".zmetadata"
    if not meta_file.is_file():
        return False
    try:
        meta = json.loads(meta_file.read_text())["metadata"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    attrs = meta.get(".zattrs", {})
    ours = OUTPUT_MARKER in attrs or "eossl" in attrs or "embedding/.zarray" in meta
    members = {key.split("/")[0] for key in meta}
    entries = {p.name for p in path.iterdir()}
    return ours and entries <= members | {".zgroup", ".zattrs", ".zmetadata", "_eossl"}


def _netcdf_ours(path: Path) -> bool:
    try:
        import xarray as xr
        with xr.open_dataset(path) as ds:
            variables = list(ds.data_vars)
            marked = any(OUTPUT_MARKER in ds[v].attrs for v in variables) or OUTPUT_MARKER in ds.attrs
            return marked or (len(variables) == 1 and "dim" in ds[variables[0]].dims)
    except Exception:  # not netCDF, damaged, unreadable: not something eossl can call its own
        return False


def _csv_ours(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().startswith("probe,shots,")  # the header of eossl.probe's table
    except (OSError, UnicodeDecodeError):
        return False


def is_eossl_output(path) -> bool:
    """True when ``path`` is something eossl wrote: embeddings (``.nc`` / ``.zarr``) or a probe
    table (``.csv``)."""
    path = Path(path)
    if path.is_dir():
        return _zarr_entries_ours(path)
    if path.suffix == ".nc":
        return _netcdf_ours(path)
    if path.suffix == ".csv":
        return _csv_ours(path)
    return False


def claim_output(path, *, overwrite: bool = False, kind: str = "file", what: str = "output",
                 option: str = "overwrite=True") -> Path:
    """Check, before any work, that ``path`` may be written (the rule in this module's docstring).

    ``kind`` is ``"file"`` or ``"dir"`` (what will be written there); ``what`` names it in the
    message; ``option`` is how the caller spells the override (``--overwrite`` on the CLI).
    Raises :class:`ParameterError` saying what is there and what to do; nothing is touched.
    """
    path = Path(path)
    if not path.exists():
        return path
    if path.is_dir():
        if not any(path.iterdir()):
            if kind == "dir":
                return path
            raise ParameterError(f"{path}: is a folder; the {what} is a single file. Give a file path "
                                 f"(the folder was left as it is)")
        if kind == "file":
            raise ParameterError(f"{path}: is an existing folder; the {what} is a single file. Give another "
                                 "path (the folder was left as it is)")
        if is_eossl_output(path):
            return path
        raise ParameterError(f"{path}: is a folder holding files that are not eossl's {what}; eossl never "
                             f"deletes those, even with {option}. Give a new path, or empty it yourself")
    if kind == "dir":
        if overwrite:
            return path
        raise ParameterError(f"{path}: is an existing file; the {what} is a folder. Give another path, or "
                             f"pass {option} to replace the file")
    if overwrite or is_eossl_output(path):
        return path
    raise ParameterError(f"{path}: exists and is not eossl's {what}; nothing was changed. Give another "
                         f"path, or pass {option} to replace it")
