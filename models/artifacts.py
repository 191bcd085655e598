"""Reading and writing model files: safetensors and ``.npz`` only, never a pickle.

Every reader turns a missing or corrupt file into a :class:`~reelstream.errors.ModelError`
that names the file. :func:`publish` writes a whole versioned model folder
atomically: it is built under a temporary name, renamed to ``mNNNN`` and only
then named by ``CURRENT`` (itself replaced atomically), so a reader never sees a
half-written model::

    var/models/CURRENT        "m0002"
    var/models/m0001/...      the previous model, kept
    var/models/m0002/         metadata.json, weights.safetensors, runtime.npz
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from reelstream.errors import ModelError

__all__ = ["load_arrays", "load_tensors", "next_model_name", "point_current", "publish", "read_json", "save_arrays",
           "save_tensors", "write_json"]  # fmt: skip

_MODEL_NAME = re.compile(r"^m(\d{4,})$")


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"{path}: missing; is {path.parent} a model folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path}: corrupt JSON ({exc})") from None


def save_arrays(path: Path, **arrays: np.ndarray) -> None:
    np.savez(path, **arrays)  # type: ignore[arg-type]  # numpy's stub reads ** as allow_pickle


def load_arrays(path: Path, required: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The named arrays of an ``.npz``; ModelError when the file is missing, corrupt or incomplete."""
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in required if k not in data.files]
            if missing:
                raise ModelError(f"{path}: corrupt artifact, missing arrays {missing}")
            return {k: data[k] for k in required}
    except FileNotFoundError:
        raise ModelError(f"{path}: missing") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelError(f"{path}: corrupt artifact ({exc})") from None


def save_tensors(path: Path, tensors: dict[str, Any], metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, str(path), metadata=metadata)


def load_tensors(path: Path) -> dict[str, Any]:
    """A safetensors state dict on the CPU; ModelError when missing or corrupt."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not path.is_file():
        raise ModelError(f"{path}: missing")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{path}: corrupt safetensors ({exc})") from None


def next_model_name(models_dir: Path) -> str:
    """``m0001`` for an empty folder, else one more than the highest existing ``mNNNN``."""
    numbers = [int(m.group(1)) for p in models_dir.glob("m*") if (m := _MODEL_NAME.match(p.name))]
    return f"m{max(numbers, default=0) + 1:04d}"


def publish(models_dir: Path, write: Callable[[Path, str], None], *, make_current: bool = True) -> Path:
    """Build a model folder with ``write(folder, model_version)``, then move it into place.

    Returns the final folder. On any error the temporary folder is removed and
    neither the folder nor ``CURRENT`` changes.
    """
    models_dir.mkdir(parents=True, exist_ok=True)
    name = next_model_name(models_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=models_dir))
    try:
        write(tmp, name)
        final = models_dir / name
        tmp.replace(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if make_current:
        point_current(models_dir, name)
    return final


def point_current(models_dir: Path, name: str) -> None:
    """Point ``models_dir/CURRENT`` at the model folder ``name``, atomically (a new file renamed over it)."""
    pointer_tmp = models_dir / f".CURRENT-{name}"
    pointer_tmp.write_text(name + "\n")
    pointer_tmp.replace(models_dir / "CURRENT")
