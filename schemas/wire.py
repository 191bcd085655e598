"""The Avro wire format of every reelstream event (fastavro only: importing it loads no faust).

Wire format (one message value)::

    byte 0      0xA7  magic: "reelstream Avro", so foreign bytes fail fast
    byte 1      schema version of the writer (1..255)
    bytes 2..   Avro binary, schemaless (fastavro ``schemaless_writer``)

Why not Confluent's 5-byte header: there is no schema registry here. The
schemas ship with the code (``schemas/*.avsc``) and the version byte names the
writer schema; readers keep every version they know.

Evolution rules (tested in ``tests/test_stream_schemas.py``):

* a new version only **appends** fields, each with a default;
* a newer reader decodes older bytes with Avro schema resolution (writer =
  the old version, reader = its own), filling defaults;
* an older reader decodes bytes of a version it does not know with its newest
  schema: appended fields sit after every field it knows, so it reads its
  fields and ignores the rest.

Each event type's codec is built once (:func:`codec_for`, schemas parsed then). The Faust codec over
this format is ``streams/faust_codec.py``.
"""

from __future__ import annotations

import io
import json
from functools import cache
from pathlib import Path
from typing import Any

import fastavro

from reelstream.errors import DataError

__all__ = [
    "MAGIC",
    "DecodeError",
    "SchemaCodec",
    "codec_for",
]

MAGIC = 0xA7
SCHEMA_DIR = Path(__file__).resolve().parent
_FILES = {"RatingEvent": "rating_event.avsc", "MovieEvent": "movie_event.avsc", "DeadLetter": "dead_letter.avsc",
          "ImpressionEvent": "impression_event.avsc"}  # fmt: skip
#: Earlier versions each reader keeps, so it resolves bytes its predecessors wrote (docs/events.md).
_OLDER = {"RatingEvent": ("rating_event.v1.avsc",), "ImpressionEvent": ("impression_event.v1.avsc",)}


class DecodeError(DataError):
    """Bytes that are not a reelstream Avro event of the expected type."""


@cache
def _schema_doc(name: str) -> dict[str, Any]:
    return _read_schema(_FILES[name])


def _read_schema(file: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / file).read_text(encoding="utf-8"))


class SchemaCodec:
    """Encode/decode one event type; knows every version of its schema it was given.

    >>> c = codec_for("MovieEvent")
    >>> c.decode(c.encode({"movie_id": 1, "title": "Toy Story", "genres": ["Animation"], "year": 1995}))["tags"]
    []
    """

    def __init__(self, schema: dict[str, Any], older: tuple[dict[str, Any], ...] = ()) -> None:
        self.schema = fastavro.parse_schema(schema)
        self.version = int(schema.get("version", 1))
        if not 1 <= self.version <= 255:
            raise ValueError(f"schema version {self.version} outside 1..255")
        self.known: dict[int, Any] = {self.version: self.schema}
        for old in older:
            self.known[int(old.get("version", 1))] = fastavro.parse_schema(old)
        self._header = bytes((MAGIC, self.version))

    def encode(self, record: dict[str, Any]) -> bytes:
        buf = io.BytesIO()
        buf.write(self._header)
        fastavro.schemaless_writer(buf, self.schema, record)
        return buf.getvalue()

    def decode(self, data: bytes) -> dict[str, Any]:
        """The record as a dict; :class:`DecodeError` for anything else."""
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) < 3 or data[0] != MAGIC:
            raise DecodeError("not a reelstream Avro message (bad magic byte or too short)")
        version = data[1]
        writer = self.known.get(version)
        buf = io.BytesIO(data)
        buf.seek(2)
        try:
            if writer is None:
                if version < self.version:
                    raise DecodeError(f"writer schema version {version} is unknown to this reader")
                # A newer writer only appended fields: read ours, ignore the tail.
                record = fastavro.schemaless_reader(buf, self.schema, None)
            elif writer is self.schema:
                record = fastavro.schemaless_reader(buf, self.schema, None)
            else:
                record = fastavro.schemaless_reader(buf, writer, self.schema)
        except DecodeError:
            raise
        except Exception as exc:  # untrusted bytes: fastavro raises many types; none may escape
            raise DecodeError(f"Avro decode failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(record, dict):  # every contract here is an Avro record
            raise DecodeError(f"Avro decode gave a {type(record).__name__}, not a record")
        return record


@cache
def codec_for(name: str) -> SchemaCodec:
    """The cached codec of event type ``name`` (RatingEvent, MovieEvent, DeadLetter, ImpressionEvent), with its
    older versions."""
    return SchemaCodec(_schema_doc(name), tuple(_read_schema(f) for f in _OLDER.get(name, ())))
