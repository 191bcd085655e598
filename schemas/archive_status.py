"""Reading ``rs:archive``, the archiver's status hash (written by ``streams/archive.py``; ``docs/redis-keys.md``).

Per partition the archiver records ``{topic}:{p}:offset`` (highest archived offset) and ``{topic}:{p}:highwater``
(the last high watermark it saw). What lies between is the *unarchived tail*: records only the broker holds,
which a memory-only broker that dies takes with it unless a producer sends them again (``streams/resend.py``).
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["unarchived_tail"]


def unarchived_tail(status: Mapping[str, str]) -> int:
    """Records the broker held beyond the archive when the archiver last looked, over every partition.

    >>> unarchived_tail({"r:0:offset": "9", "r:0:highwater": "15", "r:1:offset": "-1", "r:1:highwater": "2",
    ...                  "r:2:offset": "4", "r:2:highwater": "-1", "records": "15"})
    7
    """
    tail = 0
    for name, value in status.items():
        if not name.endswith(":offset"):
            continue
        try:
            offset, hw = int(value), int(status.get(name[: -len("offset")] + "highwater", "-1"))
        except ValueError:
            continue
        tail += max(hw - 1 - offset, 0)
    return tail
