# mypy: disable-error-code="empty-body"
"""Images and conversation history as inputs: pinned messages, the stored data forms,
round trips through artifacts, and the errors (text-only models, oversized or unsafe data)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import desic
from desic.lm import LMRequest
from desic.testing import FakeLM, FunctionLM, last_input

PromptSnapshot = Callable[..., dict[str, list[dict[str, Any]]]]

# the smallest valid PNG header and a few bytes: desic does not decode images, it sends them
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(40))
PNG_URL = "data:image/png;base64,iVBORw0KGgoAAQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYn"


@desic.signature
def describe(photo: desic.Image, question: str) -> str:
    """Answer the question about the photo."""


@desic.signature
def compare(photos: list[desic.Image], aspect: str) -> str:
    """Compare the photos on the given aspect."""


@desic.signature
def assist(history: desic.History, message: str) -> str:
    """Reply to the user's latest message, continuing the conversation."""


@pytest.fixture
def image_limit() -> Iterator[None]:
    before = desic.Image.max_inline_bytes
    yield
    desic.Image.max_inline_bytes = before


# --- Image: constructors and data -------------------------------------------------------------


def test_an_image_from_bytes_a_path_or_a_url(tmp_path: Path) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(PNG)
    from_bytes, from_path = desic.Image(PNG), desic.Image(path)
    assert from_bytes == from_path == desic.Image.from_path(str(path)) == desic.Image(url=PNG_URL)
    assert from_bytes.inline_bytes == len(PNG)
    web = desic.Image("https://example.com/cat.jpg", detail="low")
    assert web.model_dump() == {"url": "https://example.com/cat.jpg", "detail": "low"}
    assert web.content_part() == {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg", "detail": "low"}}
    assert desic.Image.from_bytes(b"\xff\xd8\xff\xe0jpeg").url.startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError, match="media_type"):
        desic.Image(b"not an image")
    with pytest.raises(ValueError, match="cannot read image"):
        desic.Image(tmp_path / "missing.png")
    with pytest.raises(TypeError, match="URL, a path, bytes or a PIL image"):
        desic.Image(42)


def test_a_pil_image_is_sent_as_png() -> None:
    pil = pytest.importorskip("PIL.Image")
    image = desic.Image(pil.new("RGB", (2, 2), "red"))
    assert image.url.startswith("data:image/png;base64,iVBORw0KGgo")


def test_image_data_is_a_url_never_a_path() -> None:
    assert desic.Image.model_validate({"url": PNG_URL}) == desic.Image(PNG)
    assert desic.Image.model_validate("https://example.com/a.png").url == "https://example.com/a.png"
    for bad in ("/etc/passwd", "file:///etc/passwd", {"url": "photo.png"}, "data:text/plain;base64,aGk="):
        with pytest.raises(ValueError, match="http"):
            desic.Image.model_validate(bad)


def test_storing_an_inline_image_above_the_limit_is_a_clear_error(image_limit: None) -> None:
    desic.Image.max_inline_bytes = 10
    image = desic.Image(PNG)
    with pytest.raises(ValueError, match=r"too large to store .*max_inline_bytes = 10.*URL"):
        image.model_dump(mode="json")
    assert desic.Image("https://example.com/big.png").model_dump(mode="json")  # a reference: no limit
    with desic.context(lm=FakeLM(default="a cat")):  # sending it is not storing it
        assert describe(photo=image, question="what is it?") == "a cat"


# --- rendering --------------------------------------------------------------------------------


def test_image_prompt_is_pinned(prompt_snapshot: PromptSnapshot) -> None:
    prompts = prompt_snapshot(describe, photo=desic.Image(PNG), question="What animal is this?")
    user = prompts["describe"][-1]["content"]
    assert [p["type"] for p in user] == ["text", "image_url", "text"]
    assert user[1] == {"type": "image_url", "image_url": {"url": PNG_URL}}


def test_images_list_prompt_is_pinned(prompt_snapshot: PromptSnapshot) -> None:
    photos = [desic.Image("https://example.com/a.png"), desic.Image("https://example.com/b.png", detail="high")]
    prompts = prompt_snapshot(compare, photos=photos, aspect="colour")
    assert [p["type"] for p in prompts["compare"][-1]["content"]] == ["text", "image_url", "text", "image_url", "text"]


def test_history_prompt_is_pinned(prompt_snapshot: PromptSnapshot) -> None:
    history = [
        {"role": "user", "content": "My order #12 has not arrived."},
        {"role": "assistant", "content": "Sorry! It left the warehouse on Monday."},
        {"inputs": {"message": "When will it come?"}, "output": "Within three days."},
    ]
    prompts = prompt_snapshot(assist, history=history, message="Can I change the address?")
    roles = [m["role"] for m in prompts["assist"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert prompts["assist"][-1] == {"role": "user", "content": "message: Can I change the address?"}
    assert "history" not in prompts["assist"][0]["content"]  # turns, not a listed input


def test_history_takes_a_history_object_or_plain_turns_alike() -> None:
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    lm = FakeLM(default="fine")
    with desic.context(lm=lm):
        assist(history=desic.History(turns), message="m")
        assist(history=turns, message="m")  # type: ignore[arg-type]  # plain data works too
        assist(history=[], message="m")  # type: ignore[arg-type]
    assert lm.calls[0].messages == lm.calls[1].messages
    assert len(lm.calls[2].messages) == 2
    assert desic.History(turns).model_dump() == turns
    with desic.context(lm=lm), pytest.raises(desic.DataError, match="'history'.*role"):
        assist(history=[{"role": "user"}], message="m")  # type: ignore[arg-type]
    with desic.context(lm=lm), pytest.raises(desic.DataError, match="'photo'.*desic.Image"):
        describe(photo="photo.png", question="q")  # type: ignore[arg-type]


def test_a_text_only_model_is_refused_before_the_call() -> None:
    lm = FakeLM(default="x", vision=False)
    with desic.context(lm=lm), pytest.raises(desic.ConfigError, match="reads text only.*vision=True"):
        describe(photo=desic.Image(PNG), question="q")
    assert lm.calls == []
    with desic.context(lm=desic.lm(lm, retries=2)), pytest.raises(desic.ConfigError, match="text only"):
        describe(photo=desic.Image(PNG), question="q")  # wrappers report their model's capability
    with desic.context(lm=lm):
        assert assist(history=desic.History([{"role": "user", "content": "hi"}]), message="m") == "x"  # no image


def test_which_providers_take_images() -> None:
    from desic.lm._local import LocalLM
    from desic.lm._openai import OpenAILM

    assert OpenAILM("gpt-4o-mini", api_key="k").vision
    assert not OpenAILM("gpt-3.5-turbo", api_key="k").vision
    assert OpenAILM("llava", base_url="http://127.0.0.1:1/v1").vision  # a server of one's own
    assert not OpenAILM("gpt-4o-mini", api_key="k", vision=False).vision
    assert not LocalLM().vision and LocalLM(vision=True).vision


# --- plain data in demos and artifacts ------------------------------------------------------


def answer_by_photo(request: LMRequest) -> str:
    content = request.messages[-1]["content"]
    urls = [p["image_url"]["url"] for p in content if p.get("type") == "image_url"]
    return "red" if urls and urls[0] == PNG_URL else "blue"


def test_image_demos_round_trip_through_an_artifact(tmp_path: Path, prompt_snapshot: PromptSnapshot) -> None:
    rows = [
        {"photo": desic.Image(PNG), "question": "Which colour?", "output": "red"},
        {"photo": "https://example.com/blue.png", "question": "Which colour?", "output": "blue"},
    ]
    compiled = desic.compile(describe, rows, metric=desic.metrics.exact_match, optimizer="labeled",
                             lm=FunctionLM(answer_by_photo), max_demos=2)
    demos = compiled.program.nodes[0].demos
    stored = [d.inputs["photo"] for d in demos]  # plain data: {"url": ...} (or the row's own URL)
    assert {desic.Image.model_validate(s).url for s in stored} == {PNG_URL, "https://example.com/blue.png"}
    assert {"url": PNG_URL} in stored
    path = compiled.save(tmp_path / "describe.json")
    assert {"url": PNG_URL} in [d["inputs"]["photo"] for d in json.loads(path.read_text())["nodes"][0]["demos"]]
    loaded = desic.load(path)
    prompts = prompt_snapshot(loaded, photo=desic.Image("https://example.com/query.png"), question="Which colour?")
    kinds = [[p["type"] for p in m["content"]] if isinstance(m["content"], list) else "text" for m in prompts["describe"]]
    assert kinds == ["text", ["text", "image_url", "text"], "text", ["text", "image_url", "text"], "text",
                     ["text", "image_url", "text"]]


def test_an_artifact_demo_cannot_make_desic_read_a_file(tmp_path: Path) -> None:
    compiled = desic.compile(describe, [{"photo": desic.Image(PNG), "question": "q", "output": "red"}],
                             metric=desic.metrics.exact_match, optimizer="labeled", lm=FunctionLM(answer_by_photo))
    path = compiled.save(tmp_path / "describe.json")
    data = json.loads(path.read_text())
    data["nodes"][0]["demos"][0]["inputs"]["photo"] = {"url": "/etc/passwd"}
    path.write_text(json.dumps(data))
    loaded = desic.load(path)
    with desic.context(lm=FakeLM(default="x")), pytest.raises(desic.DataError, match="'photo'"):
        loaded(photo=desic.Image(PNG), question="q")


def test_history_demos_round_trip_as_plain_data(tmp_path: Path) -> None:
    def reply(request: LMRequest) -> str:
        return f"you said {last_input(request).removeprefix('message: ')}"

    rows = [{"history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
             "message": "thanks", "output": "you said thanks"}]
    compiled = desic.compile(assist, rows, metric=desic.metrics.exact_match, optimizer="labeled",
                             lm=FunctionLM(reply))
    demo = compiled.program.nodes[0].demos[0]
    assert demo.inputs["history"] == rows[0]["history"]
    loaded = desic.load(compiled.save(tmp_path / "assist.json"))
    lm = FunctionLM(reply)
    with desic.context(lm=lm):
        assert loaded(history=[{"role": "user", "content": "again"}], message="bye") == "you said bye"
    roles = [m["role"] for m in lm.calls[0].messages]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user", "user"]


def test_a_streamed_call_with_an_image() -> None:
    with desic.context(lm=FakeLM(default="a small red square", chunk_chars=4)):
        items = list(describe.stream(photo=desic.Image(PNG), question="what is it?"))
    assert len(items) > 2 and items[-1].value == "a small red square"


def test_image_parts_reach_an_openai_compatible_server() -> None:
    from desic.testing import FakeOpenAIServer, allow_model_requests

    with FakeOpenAIServer(lambda req: {"output": "a cat"}) as server, allow_model_requests():
        lm = desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="test")
        with desic.context(lm=lm):
            assert describe(photo=desic.Image("https://example.com/cat.png"), question="what?") == "a cat"
    user = server.requests[0]["messages"][-1]
    assert {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}} in user["content"]


def test_reports_and_desic_prompts_show_media_nodes_with_placeholders() -> None:
    from desic.report import node_prompt
    from desic.runtime import default_node
    from desic.testing.snapshots import format_prompts

    for sig in (describe, compare, assist):
        node = default_node(sig, sig.spec.name)
        text = format_prompts({node.id: node_prompt(node)})
        assert "{" in text and "cannot render" not in text
