"""Avro schemas and the codec: documented fields, round trips, bad bytes, and evolution both ways."""

from __future__ import annotations

import copy
import io
import json

import fastavro
import pytest
from faust.serializers import codecs as faust_codecs

from schemas.wire import MAGIC, SCHEMA_DIR, DecodeError, SchemaCodec, codec_for
from streams.events import rating_event
from streams.faust_codec import CODEC_NAMES, register_codecs
from streams.records import DeadLetterRecord

SCHEMAS = sorted(SCHEMA_DIR.glob("*.avsc"))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_every_schema_has_namespace_version_and_documented_fields(path) -> None:
    doc = json.loads(path.read_text())
    assert doc["namespace"] == "io.reelstream.events"
    assert doc["version"] >= 1
    assert doc["doc"]
    assert all(f.get("doc") for f in doc["fields"]), [f["name"] for f in doc["fields"] if not f.get("doc")]


def _v1_and_v2() -> tuple[dict, dict]:
    """The current RatingEvent schema and a hypothetical next version that appends a field."""
    v1 = json.loads((SCHEMA_DIR / "rating_event.avsc").read_text())
    v2 = copy.deepcopy(v1)
    v2["version"] = v1["version"] + 1
    v2["fields"].append({"name": "device", "type": ["null", "string"], "default": None, "doc": "Client device."})
    return v1, v2


EVENT = rating_event(1, 31, 4.5, 964_982_703_000, "replay")


def test_a_v1_reader_reads_v2_bytes() -> None:
    v1, v2 = _v1_and_v2()
    data = SchemaCodec(v2).encode({**EVENT, "device": "tv"})
    assert data[:2] == bytes((MAGIC, v2["version"]))
    assert SchemaCodec(v1).decode(data) == EVENT


def test_a_v2_reader_reads_v1_bytes_with_the_default() -> None:
    v1, v2 = _v1_and_v2()
    data = SchemaCodec(v1).encode(EVENT)
    assert SchemaCodec(v2, older=(v1,)).decode(data) == {**EVENT, "device": None}


@pytest.mark.parametrize(
    "data", [b"", b"\xa7", b"plain text", bytes((MAGIC, 1)) + b"\xff\xff\xff", bytes((MAGIC, 0, 1, 2))]
)
def test_undecodable_bytes_raise_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec_for("RatingEvent").decode(data)


def test_faust_codec_is_registered_once_and_records_name_it() -> None:
    register_codecs()
    register_codecs()
    codec = faust_codecs.get_codec(CODEC_NAMES["RatingEvent"])
    assert codec.loads(codec.dumps(EVENT)) == EVENT
    dead = DeadLetterRecord(original=b"\x00", topic="t", partition=1, offset=2, reason="undecodable", error="e",
                            dead_at=3)  # fmt: skip
    assert codec_for("DeadLetter").decode(dead.dumps())["original"] == b"\x00"


V1 = json.loads((SCHEMA_DIR / "rating_event.v1.avsc").read_text())
PROBE = {**EVENT, "user_id": 2_000_000_000, "source": "probe"}


def test_the_current_reader_reads_bytes_of_the_v1_writer() -> None:
    old = SchemaCodec(V1).encode(EVENT)
    assert old[1] == 1 and codec_for("RatingEvent").decode(old) == EVENT
    assert codec_for("RatingEvent").decode(codec_for("RatingEvent").encode(PROBE)) == PROBE


def test_a_v1_reader_resolving_the_writer_schema_reads_a_probe_as_the_default_live() -> None:
    data = codec_for("RatingEvent").encode(PROBE)
    resolved = fastavro.schemaless_reader(
        io.BytesIO(data[2:]), codec_for("RatingEvent").schema, fastavro.parse_schema(V1)
    )
    assert resolved == {**PROBE, "source": "live"}


def test_a_v1_reader_without_the_writer_schema_refuses_a_probe_instead_of_misreading_it() -> None:
    old_reader = SchemaCodec(V1)
    assert old_reader.decode(codec_for("RatingEvent").encode(EVENT)) == EVENT  # other sources still read
    with pytest.raises(DecodeError):
        old_reader.decode(codec_for("RatingEvent").encode(PROBE))  # a dead letter "undecodable", never applied


IMPRESSION_V1 = json.loads((SCHEMA_DIR / "impression_event.v1.avsc").read_text())
IMPRESSION = {"impression_id": "a" * 32, "user_id": 7, "movie_ids": [3, 1, 2], "variant": "control",
              "segment": "new", "model_version": "m0001", "rules_version": "v1-x", "source": "personalised",
              "cached": False, "degraded": False, "exploration": "none", "served_ms": 1_600_000_000_000,
              "clock": "event"}  # fmt: skip


def test_impressions_of_the_v1_writer_read_with_no_novelty_and_a_v1_reader_skips_it() -> None:
    old = SchemaCodec(IMPRESSION_V1).encode(IMPRESSION)
    assert old[1] == 1 and codec_for("ImpressionEvent").decode(old) == {**IMPRESSION, "novelty": None}
    new = codec_for("ImpressionEvent").encode({**IMPRESSION, "novelty": 5.25})
    assert new[1] == 2 and codec_for("ImpressionEvent").decode(new)["novelty"] == 5.25
    assert SchemaCodec(IMPRESSION_V1).decode(new) == IMPRESSION  # the appended field is past every field it knows
