"""Routing as a property: for random users, follows, mutes and actions, each inbox is exactly right."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from qa_notify.events import channels
from qa_notify.events.connections import make_client
from qa_notify.extensions import db
from qa_notify.models import Notification, Question, Topic, User
from qa_notify.preferences.channels import set_muted_types
from qa_notify.qa.service import ask_question, post_answer, set_follow

from .conftest import flush_redis

N_USERS, N_TOPICS = 5, 3
users_ = st.integers(0, N_USERS - 1)
topic_sets = st.sets(st.integers(0, N_TOPICS - 1), max_size=2)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("ask"), users_, topic_sets),
        st.tuples(st.just("answer"), users_, st.integers(0, 20)),
        st.tuples(st.just("follow_question"), users_, st.integers(0, 20)),
    ),
    min_size=1,
    max_size=12,
)
scenario = st.fixed_dictionaries(
    {
        "topic_follows": st.sets(st.tuples(users_, st.integers(0, N_TOPICS - 1))),
        "user_follows": st.sets(st.tuples(users_, users_).filter(lambda p: p[0] != p[1])),
        "mutes": st.dictionaries(users_, st.sets(st.sampled_from(["new_question", "new_answers"]), min_size=1)),
        "actions": actions,
    }
)


def reset(app) -> None:
    db.drop_all()
    db.create_all()
    flush_redis(app.config["REDIS_URL"])


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(s=scenario)
def test_every_inbox_is_exactly_the_expected_set(app, s):
    with app.test_request_context():
        reset(app)
        users = [User(username=f"u{i}", password_hash="x", role="user") for i in range(N_USERS)]
        topics = [Topic(name=f"t{i}") for i in range(N_TOPICS)]
        db.session.add_all(users + topics)
        db.session.commit()
        for u, t in s["topic_follows"]:
            set_follow(users[u], "topic", topics[t].id, True)
        for follower, followed in s["user_follows"]:
            set_follow(users[follower], "user", users[followed].id, True)
        for u, types in s["mutes"].items():
            set_muted_types(users[u].id, sorted(types))

        expected: dict[int, list[tuple]] = {i: [] for i in range(N_USERS)}
        questions: list[tuple[int, int]] = []  # (question id, asker index)
        question_followers: dict[int, set[int]] = {}
        for action in s["actions"]:
            kind, actor = action[0], action[1]
            if kind == "ask":
                q = ask_question(users[actor], "title", "", [f"t{t}" for t in sorted(action[2])])
                questions.append((q.id, actor))
                question_followers[q.id] = {actor}
                reached = {u for u, t in s["topic_follows"] if t in action[2]}
                reached |= {f for f, followed in s["user_follows"] if followed == actor}
                for u in reached - {actor}:
                    if "new_question" not in s["mutes"].get(u, ()):
                        expected[u].append(("new_question", q.id))
            elif questions:
                qid, _ = questions[action[2] % len(questions)]
                if kind == "follow_question":
                    set_follow(users[actor], "question", qid, True)
                    question_followers[qid].add(actor)
                else:
                    a = post_answer(users[actor], db.session.get(Question, qid), "an answer")
                    for u in question_followers[qid] - {actor}:
                        if "new_answers" not in s["mutes"].get(u, ()):
                            expected[u].append(("new_answers", a.id))

        r = make_client(app.config["REDIS_URL"])
        for i, user in enumerate(users):
            rows = db.session.scalars(
                select(Notification).where(Notification.user_id == user.id).order_by(Notification.id)
            )
            got = [
                (
                    n.event_type,
                    n.payload.get("question_id") if n.event_type == "new_question" else n.payload["answer_id"],
                )
                for n in rows
            ]
            assert got == expected[i], f"user u{i}"
            assert r.xlen(channels.user_stream(user.id)) == len(expected[i])
