"""The SSE wire format, checked against a real SSE parser (sseclient-py)."""

from __future__ import annotations

import pytest
import sseclient
from hypothesis import given, settings
from hypothesis import strategies as st

from qa_notify.live.sse import SSEFieldError, format_comment, format_event, format_retry

# Any text at all, including CR, LF, CRLF, NUL-free unicode and field-looking lines.
payloads = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300)
names = st.from_regex(r"[a-z][a-z0-9_]{0,31}", fullmatch=True)
ids = st.from_regex(r"[0-9]{1,13}-[0-9]{1,4}", fullmatch=True)


def parse(stream: bytes) -> list:
    return list(sseclient.SSEClient([stream]).events())


def normalise_newlines(text: str) -> str:
    """SSE carries line breaks, not which kind: CR and CRLF arrive as LF."""
    return text.replace("\r\n", "\n").replace("\r", "\n")


@settings(max_examples=300, deadline=None)
@given(data=payloads, event=names, event_id=ids)
def test_any_data_round_trips_as_one_event(data, event, event_id):
    frame = format_retry(2000) + format_comment("heartbeat") + format_event(data, event=event, id=event_id)
    [parsed] = parse(frame)
    assert parsed.event == event
    assert parsed.id == event_id
    assert parsed.data == normalise_newlines(data)


@settings(max_examples=200, deadline=None)
@given(datas=st.lists(payloads, min_size=1, max_size=5))
def test_consecutive_events_stay_separate(datas):
    stream = b"".join(format_event(d, event="new_answers", id=f"{i}-0") for i, d in enumerate(datas))
    parsed = parse(stream)
    assert [p.data for p in parsed] == [normalise_newlines(d) for d in datas]
    assert [p.id for p in parsed] == [f"{i}-0" for i in range(len(datas))]


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("evil", ["x\nevent: admin", "x\rid: 1", "x\r\ndata: forged", "a\x00b"])
def test_line_breaks_in_names_and_ids_are_refused(field, evil):
    with pytest.raises(SSEFieldError):
        format_event("{}", **{field: evil})


def test_data_cannot_forge_fields():
    [parsed] = parse(format_event("ok\n\nevent: admin\nid: 999\ndata: forged", event="new_answers", id="1-0"))
    assert parsed.event == "new_answers" and parsed.id == "1-0"
    assert parsed.data == "ok\n\nevent: admin\nid: 999\ndata: forged"


def test_comments_are_not_events():
    assert parse(format_comment("line one\nevent: admin") + format_event("x", event="e"))[0].event == "e"
