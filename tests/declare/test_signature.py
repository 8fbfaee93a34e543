# mypy: disable-error-code="empty-body"
"""``@desic.signature``: declaration, spec, errors, and calling outside a pipeline."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

import desic
from desic.lm import LMRequest
from desic.testing import FakeLM, FunctionLM


class Route(BaseModel):
    team: Literal["billing", "shipping", "tech"]
    urgent: bool = False


@desic.signature
def route(ticket: str) -> Route:
    """Route a support ticket to a team."""


@desic.signature
def summarize(text: str, max_words: int = 20) -> str:
    """Summarize the text."""


# --- decoration -----------------------------------------------------------------------------


def test_bare_decoration_builds_a_signature() -> None:
    assert isinstance(route, desic.Signature)
    assert route.spec.name == "route"
    assert route.strategy == "predict"
    assert route.node_name is None
    assert route.spec.ref.endswith(":route")
    assert route.__name__ == "route"
    assert route.__doc__ == "Route a support ticket to a team."


def test_decoration_with_arguments() -> None:
    @desic.signature(name="triage", strategy="chain_of_thought")
    def route_ticket(ticket: str) -> Route:
        """Triage."""

    assert isinstance(route_ticket, desic.Signature)
    assert route_ticket.spec.name == "triage"
    assert route_ticket.strategy == "chain_of_thought"
    assert route_ticket.__name__ == "route_ticket"


def test_decoration_with_empty_arguments() -> None:
    @desic.signature()
    def echo(text: str) -> str:
        """Echo."""

    assert echo.spec.name == "echo"
    assert echo.strategy == "predict"


def test_unknown_strategy_is_refused() -> None:
    with pytest.raises(desic.SignatureError, match="unknown strategy 'tree_of_thought'"):

        @desic.signature(strategy="tree_of_thought")
        def f(text: str) -> str:
            """F."""


def test_invalid_name_is_refused() -> None:
    with pytest.raises(desic.SignatureError, match="invalid name"):

        @desic.signature(name="has space")
        def f(text: str) -> str:
            """F."""


def test_docstring_becomes_instructions_cleaned() -> None:
    @desic.signature
    def f(text: str) -> str:
        """
        First line.

            Indented detail.
        """

    assert f.spec.instructions == "First line.\n\n    Indented detail."


def test_missing_docstring_gets_generated_instructions() -> None:
    @desic.signature
    def f(question: str, context: str) -> str: ...

    assert f.spec.instructions == "Given question, context, produce output."


# --- inputs ---------------------------------------------------------------------------------


def test_inputs_with_descriptions_and_defaults() -> None:
    @desic.signature
    def f(
        ticket: Annotated[str, "the customer's message"],
        language: Annotated[str, Field(description="ISO code")] = "en",
        priority: int = Field(3, description="1 (low) to 5 (high)"),
        tags: list[str] | None = None,
    ) -> str:
        """F."""

    by_name = {field.name: field for field in f.spec.inputs}
    assert list(by_name) == ["ticket", "language", "priority", "tags"]

    assert by_name["ticket"].description == "the customer's message"
    assert by_name["ticket"].schema == {"type": "string"}
    assert by_name["ticket"].required is True

    assert by_name["language"].description == "ISO code"
    assert by_name["language"].required is False
    assert by_name["language"].default == "en"

    assert by_name["priority"].description == "1 (low) to 5 (high)"
    assert by_name["priority"].schema == {"type": "integer"}
    assert by_name["priority"].required is False
    assert by_name["priority"].default == 3

    assert by_name["tags"].required is False
    assert by_name["tags"].default is None
    assert by_name["tags"].description == ""


def test_defaults_are_filled_in_when_calling() -> None:
    lm = FakeLM(["short"])
    with desic.context(lm=lm):
        assert summarize("a long text") == "short"
    user = lm.calls[0].messages[-1]["content"]
    assert "text: a long text" in user
    assert "max_words: 20" in user


def test_input_descriptions_reach_the_prompt() -> None:
    @desic.signature
    def f(ticket: Annotated[str, "the customer's message"]) -> str:
        """F."""

    lm = FakeLM(["x"])
    with desic.context(lm=lm):
        f("hi")
    assert "ticket (string): the customer's message" in lm.calls[0].messages[0]["content"]


# --- outputs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "answer", "expected"),
    [
        (str, "hello", "hello"),
        (int, 42, 42),
        (list[str], ["a", "b"], ["a", "b"]),
        (Literal["yes", "no"], "no", "no"),
    ],
    ids=["str", "int", "list[str]", "Literal"],
)
def test_bare_return_types_are_wrapped_and_unwrapped(
    annotation: Any, answer: Any, expected: Any
) -> None:
    def f(question: str) -> Any:
        """Answer."""

    f.__annotations__["return"] = annotation
    sig = desic.signature(f)

    assert sig.spec.output_field == "output"
    assert sig.spec.output_names == ("output",)
    assert list(sig.output_model.model_fields) == ["output"]
    assert sig.spec.output_schema["required"] == ["output"]

    lm = FakeLM([answer])
    with desic.context(lm=lm):
        result = sig("q")
    assert result == expected
    assert type(result) is type(expected)
    # The LM was asked for the wrapped model, the caller got the bare value.
    assert lm.calls[0].response_model is sig.output_model


def test_literal_output_is_validated() -> None:
    @desic.signature
    def yes_no(question: str) -> Literal["yes", "no"]:
        """Answer yes or no."""

    assert yes_no.spec.output_schema["properties"]["output"]["enum"] == ["yes", "no"]
    with desic.context(lm=FakeLM(["maybe"])), pytest.raises(desic.OutputValidationError):
        yes_no("is it?")


def test_pydantic_model_output_is_returned_as_is() -> None:
    assert route.spec.output_field is None
    assert route.output_model is Route
    assert route.spec.output_names == ("team", "urgent")
    lm = FakeLM([{"team": "shipping", "urgent": True}])
    with desic.context(lm=lm):
        result = route("where is my parcel")
    assert isinstance(result, Route)
    assert result == Route(team="shipping", urgent=True)
    assert lm.calls[0].response_model is Route


def test_return_description_from_annotated() -> None:
    @desic.signature
    def f(text: str) -> Annotated[str, "a one-line summary"]:
        """F."""

    prop = f.spec.output_schema["properties"]["output"]
    assert prop["description"] == "a one-line summary"


def test_output_names_a_bare_return_type() -> None:
    @desic.signature
    def detect(sentence: str) -> Annotated[str, desic.Output("language", "its English name")]:
        """Identify the language of the sentence."""

    assert detect.spec.output_field == "language"
    assert detect.spec.output_names == ("language",)
    assert detect.spec.output_schema["properties"]["language"]["description"] == "its English name"
    lm = FakeLM([{"language": "German"}])
    with desic.context(lm=lm):
        result = detect("Das ist gut.")
    assert result == "German"
    assert list(lm.calls[0].response_model.model_fields) == ["language"]


def test_output_name_keeps_its_labels_and_demos() -> None:
    @desic.signature
    def detect(sentence: str) -> Annotated[str, desic.Output("language")]:
        """Identify the language."""

    rows = [{"sentence": "Das ist gut.", "language": "German"}, {"sentence": "C'est bon.", "language": "French"}]
    with desic.context(lm=FakeLM(default="German")):
        compiled = desic.compile(detect, rows, metric="exact_match", optimizer="labeled")
    (node,) = compiled.program.nodes
    assert {d.output["language"] for d in node.demos} == {"German", "French"}


@pytest.mark.parametrize(
    ("annotation", "message"),
    [
        (Annotated[Route, desic.Output("route")], "Route already names its fields"),
        (Annotated[str, desic.Output("not a name")], "needs a field name"),
        (Annotated[str, desic.Output("a"), desic.Output("b")], "2 desic.Output marks"),
        (Annotated[str, desic.Output("sentence")], "'sentence' is both an input and an output"),
    ],
    ids=["model", "bad-name", "two", "clash"],
)
def test_output_mistakes_are_signature_errors(annotation: Any, message: str) -> None:
    def f(sentence: str) -> Any:
        """F."""

    f.__annotations__["return"] = annotation
    with pytest.raises(desic.SignatureError, match=message):
        desic.signature(f)


def test_input_output_name_clash_is_refused() -> None:
    with pytest.raises(desic.SignatureError, match="'team' is both an input and an output"):

        @desic.signature
        def f(team: str) -> Route:
            """F."""


# --- declaration errors ---------------------------------------------------------------------


class Plain:
    """Not something pydantic can describe."""


def test_missing_annotation_names_function_and_parameter() -> None:
    def untyped(ticket, lang: str) -> str:  # type: ignore[no-untyped-def]
        """F."""

    with pytest.raises(desic.SignatureError) as info:
        desic.signature(untyped)
    msg = str(info.value)
    assert "untyped" in msg
    assert "'ticket'" in msg
    assert "no type annotation" in msg


def test_var_positional_is_refused() -> None:
    def star(ticket: str, *extra: str) -> str:
        """F."""

    with pytest.raises(desic.SignatureError) as info:
        desic.signature(star)
    assert "star" in str(info.value)
    assert "*extra" in str(info.value)


def test_var_keyword_is_refused() -> None:
    def starstar(ticket: str, **options: str) -> str:
        """F."""

    with pytest.raises(desic.SignatureError) as info:
        desic.signature(starstar)
    assert "starstar" in str(info.value)
    assert "**options" in str(info.value)


def test_unsupported_input_type_names_function_and_parameter() -> None:
    def takes_plain(thing: Plain) -> str:
        """F."""

    with pytest.raises(desic.SignatureError) as info:
        desic.signature(takes_plain)
    msg = str(info.value)
    assert "takes_plain" in msg
    assert "'thing'" in msg
    assert "Plain" in msg


def test_unsupported_return_type_is_refused() -> None:
    def returns_plain(text: str) -> Plain:
        """F."""

    with pytest.raises(desic.SignatureError) as info:
        desic.signature(returns_plain)
    assert "returns_plain" in str(info.value)
    assert "return type" in str(info.value)


def test_no_return_type_is_refused() -> None:
    def no_return(text: str):  # type: ignore[no-untyped-def]
        """F."""

    with pytest.raises(desic.SignatureError) as info:
        desic.signature(no_return)
    assert "no_return" in str(info.value)
    assert "no return annotation" in str(info.value)


def test_none_return_type_is_refused() -> None:
    def returns_none(text: str) -> None:
        """F."""

    with pytest.raises(desic.SignatureError, match="no return annotation"):
        desic.signature(returns_none)


# --- calling outside a pipeline -------------------------------------------------------------


def test_call_runs_one_prediction_with_the_lm_in_context() -> None:
    lm = FakeLM([{"team": "billing"}])
    with desic.context(lm=lm):
        result = route(ticket="charged twice")
    assert result.team == "billing"
    assert len(lm.calls) == 1
    request = lm.calls[0]
    assert request.node_id == "route"
    assert request.messages[0]["role"] == "system"
    assert request.messages[0]["content"].startswith("Route a support ticket to a team.")
    assert request.messages[-1] == {"role": "user", "content": "ticket: charged twice"}


def test_positional_arguments_follow_declared_order() -> None:
    seen: list[str] = []

    def answer(request: LMRequest) -> str:
        seen.append(request.messages[-1]["content"])
        return "ok"

    with desic.context(lm=FunctionLM(answer)):
        summarize("some text", 5)
        summarize("other", max_words=7)
    assert seen == ["text: some text\nmax_words: 5", "text: other\nmax_words: 7"]


def test_unknown_keyword_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="unexpected input 'tiket'"):
        route(tiket="typo")  # type: ignore[call-arg]


def test_too_many_positional_arguments_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="takes 1 inputs but 2 were given"):
        route("a", "b")  # type: ignore[call-arg]


def test_missing_required_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="missing required input 'ticket'"):
        route()  # type: ignore[call-arg]


def test_duplicate_input_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="multiple values for input 'text'"):
        summarize("a", text="b")  # type: ignore[misc]


def test_acall_outside_a_pipeline() -> None:
    import asyncio

    lm = FakeLM(["done"])

    async def main() -> str:
        with desic.context(lm=lm):
            return await summarize.acall(text="x")

    assert asyncio.run(main()) == "done"
    assert len(lm.calls) == 1


# --- named / strategies ---------------------------------------------------------------------


def test_named_returns_a_copy_with_a_node_name() -> None:
    first = route.named("first_pass")
    assert first is not route
    assert first.node_name == "first_pass"
    assert route.node_name is None
    assert first.spec is route.spec
    lm = FakeLM([{"team": "tech"}])
    with desic.context(lm=lm):
        assert first(ticket="crash").team == "tech"
    assert lm.calls[0].node_id == "first_pass"


def test_named_refuses_an_invalid_name() -> None:
    with pytest.raises(desic.SignatureError, match="invalid node name"):
        route.named("no spaces allowed")


def test_chain_of_thought_adds_reasoning_before_outputs() -> None:
    @desic.signature(strategy="chain_of_thought")
    def solve(question: str) -> int:
        """Solve the arithmetic question."""

    lm = FakeLM([{"reasoning": "2 plus 2 is 4", "output": 4}])
    with desic.context(lm=lm):
        result = solve("2+2?")
    assert result == 4

    model = lm.calls[0].response_model
    assert list(model.model_fields) == ["reasoning", "output"]
    assert model is not solve.output_model
    assert list(solve.output_model.model_fields) == ["output"]
    system = lm.calls[0].messages[0]["content"]
    assert system.index('"reasoning"') < system.index("- output")


def test_chain_of_thought_with_a_model_output_returns_the_model() -> None:
    cot_route = route.with_strategy("chain_of_thought")
    assert route.strategy == "predict"
    lm = FakeLM([{"reasoning": "mentions an invoice", "team": "billing", "urgent": False}])
    with desic.context(lm=lm):
        result = cot_route(ticket="invoice wrong")
    assert type(result) is Route
    assert result == Route(team="billing")
    assert list(lm.calls[0].response_model.model_fields) == ["reasoning", "team", "urgent"]


def test_repr_mentions_name_inputs_and_strategy() -> None:
    assert repr(summarize) == "<desic.Signature summarize(text, max_words) strategy=predict>"
