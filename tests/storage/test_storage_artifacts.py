"""Artifacts in stores: ``compiled.save("<store>#name")``, ``desic.load("<store>#name@version")``,
versions and tags, provenance, format migration and refusal of newer formats."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

import desic
import desic.storage as ds
from desic import ir
from desic.errors import ArtifactError, ConfigError
from desic.testing import FakeLM, FunctionLM
from tests.support.stores import url_for
from tests.support.two_teams import TRAIN, answer, triage

OPTIONS: dict[str, Any] = {"metric": desic.metrics.exact_match, "seed": 2}


@pytest.fixture
def store_url(url: str, tmp_path: Path) -> str:
    return url if not url.startswith("memory") else f"memory://artifacts-{tmp_path.name}"


def test_save_versions_and_tags_then_load_each(store_url: str) -> None:
    first = desic.compile(triage, TRAIN, lm=FunctionLM(answer), **OPTIONS)
    second = desic.compile(
        triage, TRAIN[:3], lm=FunctionLM(answer), optimizer="labeled", max_demos=1, **OPTIONS
    )
    assert first.program.nodes != second.program.nodes
    v1 = first.save(f"{store_url}#triage")
    v2 = second.save(f"{store_url}#triage@prod")
    assert (v1.ref, v1.tags, v2.ref, v2.tags) == ("triage@1", (), "triage@2", ("prod",))
    assert v1.meta["run_id"] == first.program.meta.run_id

    assert desic.load(f"{store_url}#triage@1", pipeline=triage).program == first.program
    assert desic.load(f"{store_url}#triage@prod", pipeline=triage).program == second.program
    assert desic.load(f"{store_url}#triage@latest", pipeline=triage).program == second.program
    assert desic.load(f"{store_url}#triage", pipeline=triage).program == second.program

    store = ds.open(store_url)
    store.tag_artifact("triage", 1, "prod")  # roll back prod
    assert desic.load(f"{store_url}#triage@prod", pipeline=triage).program == first.program

    # a single-signature artifact runs without the user's code
    loaded = desic.load(f"{store_url}#triage@1")
    with desic.context(lm=FakeLM(default="billing")):
        assert loaded(ticket="charged twice").team == "billing"


def test_bad_save_and_load_urls_say_how_to_fix(store_url: str) -> None:
    compiled = desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), **OPTIONS)
    with pytest.raises(
        ConfigError,
        match=r"names a store but no artifact; save to '.*#<name>\[@version\|@latest\|@tag\]'",
    ):
        compiled.save(store_url)
    with pytest.raises(ConfigError, match="versions are assigned by the store"):
        compiled.save(f"{store_url}#triage@3")
    with pytest.raises(ConfigError, match="invalid artifact name"):
        compiled.save(f"{store_url}#../triage")
    ds.open(store_url).close()  # an empty store
    with pytest.raises(ArtifactError, match="no artifact named 'triage'"):
        desic.load(f"{store_url}#triage")
    with pytest.raises(ConfigError, match="unknown storage scheme"):
        desic.load("nosuch://x#triage")


def test_loading_from_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    for scheme in ("sqlite", "tinydb", "msgspec"):
        with pytest.raises(ArtifactError, match=rf"no store at {scheme}://{tmp_path}/nope/x .*does not exist"):
            desic.load(f"{scheme}://{tmp_path}/nope/x#triage@prod")
    assert list(tmp_path.iterdir()) == []


def test_artifacts_carry_provenance(tmp_path: Path) -> None:
    db_url = url_for("sqlite", tmp_path)
    lm = FunctionLM(answer)
    compiled = desic.compile(triage, TRAIN[:8], valset=TRAIN[8:], lm=lm, storage=db_url, **OPTIONS)
    info = compiled.save(f"{db_url}#triage")
    meta = desic.load(f"{db_url}#triage@1", pipeline=triage).program.meta
    run = ds.open(db_url).get_run(meta.run_id or "")
    assert meta.desic_version == desic.__version__ and meta.created_at
    assert meta.lm == lm.describe() == run.lm
    assert (meta.optimizer, meta.optimizer_config) == ("bootstrap", {**run.optimizer_config})
    assert meta.optimizer_config["seed"] == 2
    assert (meta.score, meta.score_split) == (1.0, "valset")
    assert meta.trainset_fingerprint and len(meta.trainset_fingerprint) == 16
    assert info.meta == {
        "format_version": ir.FORMAT_VERSION,
        "pipeline": triage.ref,
        "desic_version": desic.__version__,
        "optimizer": "bootstrap",
        "score": 1.0,
        "score_split": "valset",
        "run_id": run.id,
        "trainset_fingerprint": meta.trainset_fingerprint,
        "lm": "function",
    }


# -- format versions ---------------------------------------------------------------------------

V0_ARTIFACT = {  # the pre-release layout: no format_version, provenance at the top level
    "format": "desic.program",
    "pipeline": "support:route",
    "optimizer": "labeled",
    "score": 0.5,
    "run_id": "old-run",
    "desic_version": "0.0.3",
    "lm": {"provider": "openai", "model": "gpt-4o-mini"},
    "nodes": [
        {
            "id": "route",
            "signature": {
                "name": "route",
                "instructions": "Route the ticket.",
                "inputs": [{"name": "ticket", "schema": {"type": "string"}}],
                "output_schema": {
                    "type": "object",
                    "properties": {"team": {"type": "string"}},
                    "required": ["team"],
                },
                "output_field": "team",
            },
            "demos": [{"inputs": {"ticket": "charged twice"}, "output": {"team": "billing"}}],
        }
    ],
    "edges": [],
}


def test_a_version_0_artifact_is_migrated_on_load(tmp_path: Path) -> None:
    path = tmp_path / "old.json"
    path.write_text(json.dumps(V0_ARTIFACT))
    loaded = desic.load(path)
    program = loaded.program
    assert program.format_version == ir.FORMAT_VERSION == 1
    assert (program.meta.optimizer, program.meta.score, program.meta.run_id) == (
        "labeled",
        0.5,
        "old-run",
    )
    assert program.meta.lm["model"] == "gpt-4o-mini" and program.meta.desic_version == "0.0.3"
    assert program.nodes[0].demos[0].output == {"team": "billing"}
    with desic.context(lm=FakeLM(default="shipping")):
        assert loaded(ticket="where is my parcel") == "shipping"

    store = ds.open(url_for("sqlite", tmp_path))  # through a store as well
    store.put_artifact("route", json.dumps(V0_ARTIFACT).encode())
    assert desic.load(f"{store.url}#route@1").program == program


def test_migrations_run_in_order_and_gaps_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []

    def step(n: int):  # type: ignore[no-untyped-def]
        def migrate(raw: dict) -> dict:  # type: ignore[type-arg]
            seen.append(n)
            return raw

        return migrate

    monkeypatch.setattr(ir, "FORMAT_VERSION", 3)
    monkeypatch.setattr(ir, "MIGRATIONS", {0: ir.MIGRATIONS[0], 1: step(1), 2: step(2)})
    raw = ir.migrate(dict(V0_ARTIFACT))
    assert seen == [1, 2] and raw["format_version"] == 3 and raw["meta"]["run_id"] == "old-run"
    monkeypatch.setattr(ir, "MIGRATIONS", {0: ir.MIGRATIONS[0]})
    with pytest.raises(ArtifactError, match="format version 1, which this desic cannot upgrade"):
        ir.migrate(dict(V0_ARTIFACT), source="x.json")


def test_a_newer_format_in_a_store_is_refused(store_url: str) -> None:
    data = json.loads(
        ir.encode_program(
            desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), **OPTIONS).program
        )
    )
    data["format_version"] = ir.FORMAT_VERSION + 1
    store = ds.open(store_url)
    store.put_artifact("triage", json.dumps(data).encode())
    with pytest.raises(
        ArtifactError,
        match=r"#triage@1 has format version 2, newer than this desic understands.*pip install -U desic",
    ):
        desic.load(f"{store_url}#triage@1", pipeline=triage)


def test_loading_from_a_store_in_a_fresh_process_stays_light(tmp_path: Path) -> None:
    db_url = url_for("sqlite", tmp_path)
    desic.compile(triage, TRAIN[:4], lm=FunctionLM(answer), **OPTIONS).save(f"{db_url}#triage@prod")
    code = textwrap.dedent(
        f"""
        import sys, desic
        from desic.testing import FakeLM
        compiled = desic.load({f"{db_url}#triage@prod"!r})
        with desic.context(lm=FakeLM(default="billing")):
            print(compiled(ticket="charged twice").team)
        print(sorted(m for m in ("openai", "instructor", "tinydb", "httpx", "jinja2.sandbox") if m in sys.modules))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert out[0] == "billing"
    assert "openai" not in out[1] and "instructor" not in out[1] and "tinydb" not in out[1]
