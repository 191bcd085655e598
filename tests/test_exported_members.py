"""Every public ``__all__`` names something that exists, and each package imports without torch where it must."""

from __future__ import annotations

import importlib
import pkgutil
import subprocess
import sys

import pytest

PACKAGES = ("reelstream", "bootstrap", "models", "schemas", "streams", "gateway", "monitoring")


def _modules() -> list[str]:
    names = []
    for package in PACKAGES:
        module = importlib.import_module(package)
        names.append(package)
        for info in pkgutil.walk_packages(module.__path__, prefix=f"{package}."):
            names.append(info.name)
    return names


@pytest.mark.parametrize("name", _modules())
def test_all_names_exist(name: str) -> None:
    module = importlib.import_module(name)
    for exported in getattr(module, "__all__", ()):
        assert hasattr(module, exported), f"{name}.__all__ names {exported!r}, which it does not define"


def test_serving_path_does_not_import_torch() -> None:
    """The gateway and the worker's model code are numpy-only (torch is for training)."""
    code = "import sys, gateway.app, streams.processor, models.runtime, models.state; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "False"


def test_models_never_import_streams_or_gateway() -> None:
    code = (
        "import sys, pkgutil, importlib, models\n"
        "for i in pkgutil.walk_packages(models.__path__, prefix='models.'): importlib.import_module(i.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'streams', 'gateway'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


def test_the_wire_format_loads_no_faust() -> None:
    """Encoding or decoding an event (the gateway's producer, the probes) must not pay faust's import."""
    code = (
        "import sys, schemas.wire, streams.events, streams.producer\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'faust'))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
