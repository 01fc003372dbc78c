"""Typed audiences: stored as the JSON the outbox always held, read back from old rows alike."""

from __future__ import annotations

import pytest

from qa_notify.events.audiences import (
    AudienceError,
    Everyone,
    QuestionFollowers,
    TopicAndAuthorFollowers,
    Users,
    parse_audience,
)


@pytest.mark.parametrize(
    ("audience", "stored"),
    [
        (TopicAndAuthorFollowers(3, excluded=[5]), {"kind": "new_question", "question_id": 3, "except": [5]}),
        (QuestionFollowers(3), {"kind": "new_answer", "question_id": 3, "except": []}),
        (Everyone(), {"kind": "everyone"}),
        (Everyone("moderator"), {"kind": "everyone", "role": "moderator"}),
        (Users([1, 2]), {"kind": "users", "user_ids": [1, 2]}),
    ],
)
def test_an_audience_is_stored_as_its_json_and_read_back(audience, stored):
    assert audience.to_json() == stored
    assert parse_audience(stored) == audience


def test_rows_an_older_release_wrote_are_read():
    assert parse_audience({"kind": "new_answer", "question_id": "7"}) == QuestionFollowers(7)
    assert parse_audience({"kind": "everyone", "role": None}) == Everyone()


@pytest.mark.parametrize(
    "stored",
    [
        {"kind": "followers_of_the_moon"},
        {"kind": ["users"]},
        {"kind": "new_answer"},
        {"kind": "users", "user_ids": "x"},
        [],
    ],
)
def test_an_audience_naming_nobody_is_refused(stored):
    with pytest.raises(AudienceError):
        parse_audience(stored)
