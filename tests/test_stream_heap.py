"""The worker's glibc heap settings (streams/heap.py) reach glibc on this machine and never fail elsewhere."""

from __future__ import annotations

import platform

import pytest

from streams import heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt and malloc_trim are glibc's")
def test_glibc_takes_the_settings_and_trims() -> None:
    assert heap.tune() is True
    held = [bytearray(64 * 1024) for _ in range(200)]  # below the mmap threshold: heap chunks
    del held
    assert isinstance(heap.trim(), bool)  # True when pages went back; False when there were none


def test_without_a_c_library_every_call_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(heap, "_libc", lambda: None)
    assert heap.tune() is False and heap.trim() is False
