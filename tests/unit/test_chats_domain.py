"""A chat decides alone: its events and their data, the reference's deterministic message ids, a history replayed
from the log; and what a turn takes from a chain's answer, and how models and a provider route a chain."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone

import pytest

from chainloom.commands.chat_chains import with_models
from chainloom.commands.chats import added_messages
from chainloom.domain.chats import Chat, message_id
from chainloom.domain.errors import Unprocessable
from chainloom.domain.taskchains import ChainDefinition, ExecuteConfig, TaskDefinition
from chainloom.infra.envelope import EnvelopeMapper

AT = datetime(2025, 8, 21, 10, 11, 12, 345678, tzinfo=timezone.utc)


def test_a_chats_messages_are_its_events_with_the_references_ids_and_replay_as_they_were():
    chat = Chat.start("c-1", "owner-1")
    user = chat.add_message("user", "hello", AT)
    reply = chat.add_message("assistant", "hi there", AT)
    assert user.id == hashlib.sha1(b"c-1hellouser2025-08-21T10:11:12Z").hexdigest() == message_id("c-1", "hello", "user", AT)
    assert reply.id != user.id and user.sent_at == "2025-08-21T10:11:12.345678Z"
    assert chat.history() == [
        {"id": user.id, "role": "user", "content": "hello", "timestamp": user.sent_at},
        {"id": reply.id, "role": "assistant", "content": "hi there", "timestamp": reply.sent_at},
    ]
    with pytest.raises(Unprocessable):
        chat.add_message("", "no role")

    mapper = EnvelopeMapper()
    stored = [mapper.to_stored_event(e) for e in chat.collect_events()]
    envelopes = [json.loads(s.state) for s in stored]
    assert [(e["event_type"], e["aggregate_type"], e["aggregate_id"]) for e in envelopes] == [
        ("chat.started", "chat", "c-1"), ("chat.message_added", "chat", "c-1"), ("chat.message_added", "chat", "c-1")
    ]  # fmt: skip
    assert envelopes[0]["data"] == {"owner": "owner-1"}
    assert envelopes[1]["data"] == {"messageId": user.id, "role": "user", "content": "hello", "sentAt": user.sent_at}
    replayed = None
    for event in (mapper.to_domain_event(s) for s in stored):
        replayed = event.mutate(replayed)
    assert isinstance(replayed, Chat) and replayed.owner == "owner-1" and replayed.history() == chat.history()


def test_a_turn_records_what_the_chain_added_after_the_users_message():
    known = {"m-1", "u-1"}
    framing = {"id": "", "role": "system", "content": "You are a helpful assistant."}
    output = {"messages": [framing, {"id": "m-1", "role": "user"}, {"id": "u-1", "role": "user"},
                           {"id": "", "role": "system", "content": "search results"},
                           {"id": "m-1", "role": "user"}, {"id": "", "role": "assistant", "content": "hi"}]}
    assert [m["content"] for m in added_messages(output, known, "u-1")] == ["search results", "hi"]
    fresh = {"messages": [framing, {"id": "", "role": "assistant", "content": "only this"}]}
    assert added_messages(fresh, known, "u-1") == [fresh["messages"][-1]]


def test_models_and_a_provider_route_the_model_steps_only():
    chain = ChainDefinition(id="c", tasks=(
        TaskDefinition(id="rate", handler="parse_number", execute_config=ExecuteConfig(model="rater")),
        TaskDefinition(id="answer", handler="model_execution", execute_config=ExecuteConfig(model="m", providers=("ollama",))),
        TaskDefinition(id="bare", handler="model_execution"),
    ))  # fmt: skip
    assert with_models(chain, [], "") is chain
    rate, answer, bare = with_models(chain, ["a", "b"], "openai").tasks
    assert rate == chain.tasks[0]
    assert answer.execute_config == ExecuteConfig(model="", models=("a", "b"), provider="openai", providers=())
    assert bare.execute_config == ExecuteConfig(models=("a", "b"), provider="openai")
    assert with_models(chain, ["x"], "").tasks[1].execute_config == ExecuteConfig(models=("x",), providers=("ollama",))
