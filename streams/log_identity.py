"""Which log does an offset fence fence? Pure, named rules (Burrow style) that tell a reset log from the old one.

An offset alone does not name a record: a Tansu restart (memory-only log), a topic deleted and created again
or a cluster migration starts a partition at offset 0 again, and a fence that stood at 31 would skip the new
log's offsets 0..31 as "already applied". aiokafka 0.14 speaks Metadata only up to v5 and never sees Kafka
topic ids, so the log is identified by what a consumer can check itself:

- the **fingerprint** of the record at the fenced offset (:func:`fingerprint`: crc32 of key and value plus the
  record timestamp), read back when the consumer seeks to the fence;
- the partition's **epoch** (log incarnation): 0 for the first log seen, +1 at every reset detected;
- the **high watermark** of the fetch response (correct on Tansu, unlike ListOffsets(latest); docs/infra.md);
- the **origin**: the fingerprint of the incarnation's record at offset 0, kept from when it was applied.

:class:`Fence` is what the worker stores next to each partition's applied offset (``rs:offsets:{topic}`` keeps
the offset for its readers; ``rs:fence:{topic}`` keeps ``epoch:fingerprint:highwater[:origin]``, written by the same
Lua script). :func:`verdict` sets the order of the rules; the worker (:mod:`streams.processor`), the replay
(:mod:`streams.replay`) and the archive consumer call these same functions. Case table:
``tests/test_log_identity.py``.

Rules, in the order :func:`verdict` applies them::

    NEW_EPOCH  the caller states a later incarnation than the fence's (a rebuild replaying an archived reset)
    OK         the record at the fenced offset was read back and is the fenced one (it outranks a high
               watermark: Tansu's fetch high watermark can lag the records it returns)
    OK         is_same_origin: the record at offset 0 was read back and is the one this incarnation began
               with (Tansu answers a fetch beyond its lagging high watermark with OffsetOutOfRange, and the
               consumer reads the same log again from 0: not a reset)
    RESET      is_log_shorter: the high watermark fell to or below the fenced offset (the record is gone)
    RESET      is_record_replaced: the record now at the fenced offset is another record
    OK         anything else (the fence holds; offsets at or below it were applied)

Two more rules drive the consumer's seeks: :func:`did_highwater_fall` (a suspicion: seek to the fence and
verify its record) and :func:`is_gap` (a batch starting beyond ``F + 1``: Redis lost its last acknowledged
writes; seek back once, since Kafka logs may legitimately skip offsets for control records).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from enum import Enum

__all__ = [
    "NO_FENCE",
    "Fence",
    "LogReset",
    "LogView",
    "Verdict",
    "did_highwater_fall",
    "fingerprint",
    "is_gap",
    "is_log_shorter",
    "is_new_epoch",
    "is_record_replaced",
    "is_same_origin",
    "lost_estimate",
    "verdict",
]


def fingerprint(key: bytes | None, value: bytes | None, timestamp_ms: int) -> str:
    """A record's identity within a partition: ``crc32(key)-crc32(value)-timestamp``, hex.

    Deterministic for a record, so a rebuild from the archive writes the fence a live worker wrote.

    >>> fingerprint(b"7", b"abc", 1000)
    '6abf4a82-352441c2-1000'
    """
    return f"{zlib.crc32(key or b''):08x}-{zlib.crc32(value or b''):08x}-{int(timestamp_ms)}"


@dataclass(frozen=True, slots=True)
class Fence:
    """One partition's fence: the highest applied offset and the identity of the log it was applied from."""

    offset: int = -1  #: highest applied offset in this incarnation (-1: nothing yet)
    epoch: int = 0  #: log incarnation
    fingerprint: str = ""  #: of the record at ``offset`` ("" unknown: a fence written before identities)
    highwater: int = -1  #: the fetch high watermark when it was written (-1 unknown): the lost estimate's base
    #: of the record at offset 0 of this incarnation ("" unknown: not applied from its beginning here)
    origin: str = ""

    def identity(self) -> str:
        """The ``rs:fence:{topic}`` field value ("" for a fence that carries no identity: parsed back equal)."""
        if not self.epoch and not self.fingerprint and self.highwater < 0 and not self.origin:
            return ""
        base = f"{self.epoch}:{self.fingerprint}:{self.highwater}"
        return f"{base}:{self.origin}" if self.origin else base

    @classmethod
    def parse(cls, offset: int | str | bytes | None, identity: str | bytes | None) -> Fence:
        """From the stored offset and identity (either may be missing: an older or an empty Redis)."""
        off = -1 if offset is None else int(offset)
        if not identity:
            return cls(off)
        text = identity.decode() if isinstance(identity, bytes) else identity
        epoch, fp, hw, origin = [*text.split(":"), "", "", ""][:4]
        return cls(off, int(epoch or 0), fp, int(hw) if hw.lstrip("-").isdigit() else -1, origin)


#: The fence of a partition nothing was applied to.
NO_FENCE = Fence()


@dataclass(frozen=True, slots=True)
class LogView:
    """What the caller knows of one partition's log at a batch (all optional: a seed or rebuild knows less)."""

    highwater: int | None = None  #: the fetch high watermark now (None: not a live log)
    seen: int | None = None  #: the highest high watermark seen before, in this process
    epoch: int | None = None  #: the incarnation the caller knows these records belong to (a rebuild)
    gap_checked: int | None = None  #: the fenced offset whose gap the consumer already re-read once


@dataclass(frozen=True, slots=True)
class LogReset:
    """A detected reset of one partition's log (logged, counted, recorded in ``rs:resets:{topic}``)."""

    topic: str
    partition: int
    reason: str  #: ``log_shorter``, ``record_replaced`` or ``new_epoch``
    old: Fence
    epoch: int  #: the incarnation the fence was re-based to
    highwater: int  #: the new log's high watermark (-1 unknown)
    lost: int  #: :func:`lost_estimate`
    at_ms: int


class Verdict(Enum):
    """What :func:`verdict` says about a fence and a log."""

    OK = "ok"
    NEW_EPOCH = "new_epoch"
    LOG_SHORTER = "log_shorter"
    RECORD_REPLACED = "record_replaced"

    @property
    def is_reset(self) -> bool:
        return self is not Verdict.OK


# Rule 1 - the caller knows better (a rebuild applying an archive segment of a later incarnation).
def is_new_epoch(fence: Fence, epoch: int | None) -> bool:
    """Rule 1 - the records come from a later incarnation than the fence's."""
    return epoch is not None and epoch > fence.epoch


def is_log_shorter(highwater: int | None, fenced_offset: int) -> bool:
    """Rule 2 - the log ends at or before the fenced record: it no longer holds what was applied.

    Within one incarnation the high watermark only grows past every acknowledged record, so this is a reset.

    >>> is_log_shorter(2, 31), is_log_shorter(32, 31), is_log_shorter(None, 31), is_log_shorter(0, -1)
    (True, False, False, False)
    """
    return highwater is not None and fenced_offset >= 0 and highwater <= fenced_offset


def is_record_replaced(fenced_fingerprint: str, fingerprint_at_fence: str | None) -> bool:
    """Rule 3 - the record now at the fenced offset is not the one applied there (unknown on either side: no)."""
    return bool(fenced_fingerprint) and fingerprint_at_fence is not None and fingerprint_at_fence != fenced_fingerprint


def did_highwater_fall(prev: int | None, now: int | None) -> bool:
    """The high watermark went down since it was last seen: suspicious, so verify the fenced record.

    >>> did_highwater_fall(40, 12), did_highwater_fall(12, 40), did_highwater_fall(None, 0)
    (True, False, False)
    """
    return prev is not None and now is not None and now < prev


def is_gap(first_offset: int, fenced_offset: int) -> bool:
    """A batch starts beyond the record after the fence: records between were never applied here."""
    return first_offset > fenced_offset + 1


def lost_estimate(fence: Fence, seen: int | None) -> int:
    """Records of the old incarnation never applied: its last high watermark seen - (F + 1), floored at 0."""
    last = max(fence.highwater, -1 if seen is None else seen)
    return max(last - (fence.offset + 1), 0)


def is_same_origin(fence: Fence, fingerprint_at_origin: str | None) -> bool:
    """The record at offset 0 was read back and is this incarnation's first record: the same log.

    >>> is_same_origin(Fence(40, origin="a"), "a"), is_same_origin(Fence(40, origin="a"), "b")
    (True, False)
    >>> is_same_origin(Fence(40), "a"), is_same_origin(Fence(40, origin="a"), None)
    (False, False)
    """
    return bool(fence.origin) and fingerprint_at_origin == fence.origin


def verdict(
    fence: Fence, view: LogView, fingerprint_at_fence: str | None = None, fingerprint_at_origin: str | None = None
) -> Verdict:
    """The rules in order (module docstring): does ``fence`` still fence the log the caller reads?"""
    if is_new_epoch(fence, view.epoch):
        return Verdict.NEW_EPOCH
    if fingerprint_at_fence is not None and fingerprint_at_fence == fence.fingerprint:
        return Verdict.OK  # the fenced record itself was read back: whatever a high watermark says, it is there
    if is_same_origin(fence, fingerprint_at_origin):
        return Verdict.OK  # the log's first record read back: the same log, read again from its beginning
    if is_log_shorter(view.highwater, fence.offset):
        return Verdict.LOG_SHORTER
    if is_record_replaced(fence.fingerprint, fingerprint_at_fence):
        return Verdict.RECORD_REPLACED
    return Verdict.OK
