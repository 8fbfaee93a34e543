# mypy: disable-error-code="empty-body"
"""Prompt rendering: verbatim inputs, the Jinja sandbox, strict undefined, demos, caching."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
import pytest
from pydantic import BaseModel

import desic
import desic.render
from desic import ir
from desic.render import default_template, render_messages
from desic.runtime import default_node
from desic.testing import FakeLM


class Route(BaseModel):
    team: Literal["billing", "tech"]
    reason: str


@desic.signature
def route(ticket: Annotated[str, "the customer's message"], channel: str = "email") -> Route:
    """Route the ticket to a team."""


@desic.signature
def echo(text: str) -> str:
    """Echo the text."""


def node_of(sig: desic.Signature[..., Any], **changes: Any) -> ir.Node:
    return msgspec.structs.replace(default_node(sig, sig.spec.name), **changes)


INJECTION = "{{ 7*7 }} and {% for x in y %}{{ x }}{% endfor %} {# hidden #}"


# --- inputs are data, never template source -------------------------------------------------


def test_template_syntax_in_an_input_reaches_the_lm_verbatim() -> None:
    lm = FakeLM([{"team": "tech", "reason": "r"}])
    with desic.context(lm=lm):
        route(ticket=INJECTION, channel="{{ channel }}")
    user = lm.calls[0].messages[-1]["content"]
    assert user == f"ticket: {INJECTION}\nchannel: {{{{ channel }}}}"
    assert "49" not in user


def test_template_syntax_in_demos_and_instructions_stays_verbatim() -> None:
    demo = ir.Demo(inputs={"text": "{{ 6*7 }}"}, output={"output": "{% raw %}x"})
    node = node_of(echo, instructions="Repeat {{ text }} exactly.", demos=(demo,))
    messages = render_messages(node, {"text": "{% if 1 %}y{% endif %}"})
    assert messages[0]["content"].startswith("Repeat {{ text }} exactly.")
    assert messages[1] == {"role": "user", "content": "text: {{ 6*7 }}"}
    assert messages[2] == {"role": "assistant", "content": '{"output": "{% raw %}x"}'}
    assert messages[3] == {"role": "user", "content": "text: {% if 1 %}y{% endif %}"}


def test_non_string_inputs_are_shown_as_json() -> None:
    @desic.signature
    def total(items: list[int], meta: dict[str, str]) -> int:
        """Add up."""

    messages = render_messages(node_of(total), {"items": [1, 2], "meta": {"k": "é"}})
    assert messages[-1]["content"] == 'items: [1, 2]\nmeta: {"k": "é"}'


def test_system_prompt_lists_inputs_and_output_fields() -> None:
    system = render_messages(node_of(route), {"ticket": "t", "channel": "chat"})[0]["content"]
    assert system.splitlines()[0] == "Route the ticket to a team."
    assert "- ticket (string): the customer's message" in system
    assert "- channel (string)" in system
    assert '- team (one of: "billing", "tech")' in system
    assert "- reason (string)" in system


# --- the sandbox ------------------------------------------------------------------------------


def test_sandbox_blocks_attribute_escapes_in_a_custom_template() -> None:
    evil = default_template("predict").replace(
        "{{ instructions }}", "{{ ''.__class__.__mro__[1].__subclasses__() }}"
    )
    node = node_of(echo, template=evil)
    with pytest.raises(desic.DesicError) as info:
        render_messages(node, {"text": "x"})
    assert "unsafe" in str(info.value)
    assert "subclasses" not in str(info.value)
    assert "<class" not in str(info.value)


def test_sandbox_error_stops_a_run_before_the_lm_is_called() -> None:
    @desic.pipeline
    def single(text: str) -> str:
        return echo(text=text)

    evil = default_template("predict").replace("{{ instructions }}", "{{ instructions.__class__ }}")
    program = ir.Program(pipeline=single.ref, nodes=(node_of(echo, template=evil),))
    compiled = desic.CompiledPipeline(single, program)
    lm = FakeLM(default="never")
    with desic.context(lm=lm), pytest.raises(desic.DesicError, match="unsafe"):
        compiled(text="x")
    assert lm.calls == []


def test_sandbox_is_immutable() -> None:
    template = default_template("predict").replace(
        "{{ instructions }}", "{{ input_fields.append(1) }}{{ instructions }}"
    )
    with pytest.raises(desic.DesicError):
        render_messages(node_of(echo, template=template), {"text": "x"})


def test_undefined_variable_in_a_custom_template_is_a_signature_error() -> None:
    template = default_template("predict").replace("{{ instructions }}", "{{ instructons }}")
    with pytest.raises(desic.SignatureError, match="'instructons' is undefined"):
        render_messages(node_of(echo, template=template), {"text": "x"})


def test_undefined_attribute_in_the_user_block_is_a_signature_error() -> None:
    template = default_template("predict").replace("{{ f.value }}", "{{ f.valeu }}")
    with pytest.raises(desic.SignatureError, match="template block 'user'"):
        render_messages(node_of(echo, template=template), {"text": "x"})


def test_template_syntax_error_is_a_signature_error() -> None:
    template = default_template("predict").replace("{% endfor %}", "", 1)
    with pytest.raises(desic.SignatureError, match="template syntax error"):
        render_messages(node_of(echo, template=template), {"text": "x"})


def test_template_without_the_three_blocks_is_refused() -> None:
    template = "{% block system %}hi{% endblock %}{% block user %}u{% endblock %}"
    with pytest.raises(desic.SignatureError, match="lacks block\\(s\\) assistant"):
        render_messages(node_of(echo, template=template), {"text": "x"})


def test_a_custom_template_is_used() -> None:
    template = (
        "{% block system %}SYS {{ signature }}: {{ instructions }}{% endblock %}"
        "{% block user %}{% for f in fields %}<{{ f.name }}>{{ f.value }}</{{ f.name }}>{% endfor %}{% endblock %}"
        "{% block assistant %}ANSWER {{ output.output }}{% endblock %}"
    )
    demo = ir.Demo(inputs={"text": "a"}, output={"output": "A"})
    messages = render_messages(node_of(echo, template=template, demos=(demo,)), {"text": "b"})
    assert messages == [
        {"role": "system", "content": "SYS echo: Echo the text."},
        {"role": "user", "content": "<text>a</text>"},
        {"role": "assistant", "content": "ANSWER A"},
        {"role": "user", "content": "<text>b</text>"},
    ]


# --- demos --------------------------------------------------------------------------------


def test_demos_become_user_assistant_turns_in_order() -> None:
    demos = tuple(
        ir.Demo(
            inputs={"ticket": f"ticket {i}", "channel": "email"},
            output={"team": team, "reason": f"r{i}"},
        )
        for i, team in enumerate(["billing", "tech", "billing"])
    )
    messages = render_messages(node_of(route, demos=demos), {"ticket": "now", "channel": "chat"})
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert [m["content"] for m in messages[1:-1]] == [
        "ticket: ticket 0\nchannel: email",
        '{"team": "billing", "reason": "r0"}',
        "ticket: ticket 1\nchannel: email",
        '{"team": "tech", "reason": "r1"}',
        "ticket: ticket 2\nchannel: email",
        '{"team": "billing", "reason": "r2"}',
    ]
    assert messages[-1]["content"] == "ticket: now\nchannel: chat"


def test_demo_missing_an_optional_input_omits_that_line() -> None:
    demo = ir.Demo(inputs={"ticket": "only ticket"}, output={"team": "tech", "reason": "r"})
    messages = render_messages(node_of(route, demos=(demo,)), {"ticket": "q", "channel": "chat"})
    assert messages[1]["content"] == "ticket: only ticket"


def test_chain_of_thought_template_asks_for_reasoning_first() -> None:
    cot = route.with_strategy("chain_of_thought")
    node = default_node(cot, "route")
    assert node.template == default_template("chain_of_thought")
    demo = ir.Demo(
        inputs={"ticket": "t"}, output={"reasoning": "because", "team": "tech", "reason": "r"}
    )
    messages = render_messages(msgspec.structs.replace(node, demos=(demo,)), {"ticket": "q"})
    system = messages[0]["content"]
    assert 'First write "reasoning"' in system
    assert system.index('"reasoning"') < system.index("- team")
    assert messages[2]["content"] == '{"reasoning": "because", "team": "tech", "reason": "r"}'


def test_unknown_strategy_has_no_default_template() -> None:
    with pytest.raises(desic.SignatureError, match="no default template for strategy 'nope'"):
        default_template("nope")


# --- caching ------------------------------------------------------------------------------


def test_compiled_templates_are_cached() -> None:
    template = default_template("predict") + "{# cache test #}"
    first = render_messages(node_of(echo, template=template), {"text": "same"})
    hits = desic.render._compile.cache_info().hits
    second = render_messages(node_of(echo, template=template), {"text": "same"})  # another node
    assert second == first
    assert desic.render._compile.cache_info().hits > hits
    assert desic.render._compile(template) is desic.render._compile(template)


def test_a_node_is_prepared_for_rendering_once() -> None:
    node = node_of(echo, instructions="Prepared once.")
    first = render_messages(node, {"text": "a"})
    rendering = desic.render._renderings[id(node)]
    second = render_messages(node, {"text": "b"})
    assert desic.render._renderings[id(node)] is rendering
    assert first[0] == second[0] and first[0] is not second[0]  # callers get their own dicts
    assert [first[-1]["content"], second[-1]["content"]] == ["text: a", "text: b"]
