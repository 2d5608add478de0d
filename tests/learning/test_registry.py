"""The adapter registry on SQLite and PostgreSQL: registration by content hash, the first live adapter, promotion,
shadowing, retirement and rollback with their audit rows, and the files travelling through the database or a
directory store into a worker's cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from service.domain.learning import Adapter, AdapterBlob, AdapterStatus
from service.domain.tables import AuditEntry
from service.learning import registry, store
from service.settings import Settings
from tests.learning.fixtures import adapter_dir


@pytest.fixture
def cfg(settings: Settings, tmp_path: Path) -> Settings:
    """The test settings with the adapter cache in tmp."""
    return settings.model_copy(
        update={"learning": settings.learning.model_copy(update={"cache_dir": tmp_path / "cache"})}
    )


def _statuses(engine: Engine) -> dict[str, str]:
    with Session(engine) as s:
        return {a.version: a.status for a in s.exec(select(Adapter).order_by(col(Adapter.id))).all()}


def _audit(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as s:
        rows = s.exec(select(AuditEntry).where(AuditEntry.target_type == "adapter").order_by(col(AuditEntry.id)))
        return [(r.actor, r.action, r.target_id) for r in rows.all()]


def test_first_use_registers_the_configured_adapter_once_as_v1_live(cfg: Settings, engine: Engine, tmp_path: Path):
    shipped = adapter_dir(tmp_path, "shipped")
    first = registry.bootstrap(engine, cfg, shipped)
    again = registry.bootstrap(engine, cfg, shipped)
    assert (first.version, first.status, first.promoted_via) == ("v1", "live", "bootstrap")
    assert again.id == first.id and _statuses(engine) == {"v1": "live"}
    # the same files are the same adapter, whoever registers them
    assert registry.register(engine, cfg, shipped, actor="cli:ops").id == first.id
    assert first.fields["queue"] == ["Access", "Hardware", "Network"] and first.storage == "db"
    assert _audit(engine) == [("service:bootstrap", "adapter_registered", "v1")]


def test_promote_needs_the_gate_or_force_and_rollback_restores_the_predecessor(
    cfg: Settings, engine: Engine, tmp_path: Path
):
    registry.bootstrap(engine, cfg, adapter_dir(tmp_path, "shipped"))
    v2 = registry.register(engine, cfg, adapter_dir(tmp_path, "retrained"), actor="service:retrain", parent_id=1)
    with pytest.raises(registry.RegistryError, match="has not passed the gate"):
        registry.promote(engine, v2.version, actor="alice")
    with pytest.raises(registry.RegistryError, match="trained on"):
        registry.promote(engine, v2.version, actor="alice", force=True, base_model="another/base")
    registry.record_gate(engine, v2.id or 0, passed=True, report={"n": 30}, reason="passed the gate: queue better")
    changes = registry.promote(engine, "2", actor="alice")
    assert [(c.version, c.before, c.after) for c in changes] == [("v1", "live", "retired"), ("v2", "candidate", "live")]
    with Session(engine) as s:
        live = registry.current(s, AdapterStatus.live)
        assert live is not None and live.replaced_id == 1 and live.promoted_via == "admin"
        assert live.status_changed_by == "alice" and live.live_since is not None
    with pytest.raises(registry.RegistryError, match="already live"):
        registry.promote(engine, "v2", actor="alice")
    back = registry.rollback(engine, actor="bob", reason="agents correct it more")
    assert [(c.version, c.after) for c in back] == [("v2", "retired"), ("v1", "live")]
    assert _statuses(engine) == {"v1": "live", "v2": "retired"}
    with pytest.raises(registry.RegistryError, match="nothing to roll back to"):
        registry.rollback(engine, actor="bob", reason="again")
    assert [a for a in _audit(engine) if a[0] in ("alice", "bob")] == [
        ("alice", "adapter_retired", "v1"),
        ("alice", "adapter_live", "v2"),
        ("bob", "adapter_retired", "v2"),
        ("bob", "adapter_live", "v1"),
    ]
    with pytest.raises(registry.RegistryError, match="no adapter 'v9'"):
        registry.promote(engine, "v9", actor="alice")


def test_one_shadow_at_a_time_and_the_live_one_cannot_be_retired(cfg: Settings, engine: Engine, tmp_path: Path):
    registry.bootstrap(engine, cfg, adapter_dir(tmp_path, "shipped"))
    a = registry.register(engine, cfg, adapter_dir(tmp_path, "a"), actor="t")
    b = registry.register(engine, cfg, adapter_dir(tmp_path, "b"), actor="t")
    registry.start_shadow(engine, a.version, actor="t")
    registry.start_shadow(engine, b.version, actor="t")
    assert _statuses(engine) == {"v1": "live", "v2": "candidate", "v3": "shadow"}
    with pytest.raises(registry.RegistryError, match="is live"):
        registry.retire(engine, "v1", actor="t", reason="no")
    with pytest.raises(registry.RegistryError, match="only another adapter can shadow it"):
        registry.start_shadow(engine, "v1", actor="t")
    registry.retire(engine, "v3", actor="t", reason="not better")
    assert _statuses(engine)["v3"] == "retired"


def test_the_database_admits_one_live_adapter(cfg: Settings, engine: Engine, tmp_path: Path):
    live = registry.bootstrap(engine, cfg, adapter_dir(tmp_path, "shipped"))
    with Session(engine) as s, pytest.raises(IntegrityError):
        s.add(Adapter(version="rogue", status="live", base_model="x", sha256="0" * 64, fields={}))
        s.commit()
    assert _statuses(engine) == {live.version: "live"}


def test_a_newly_configured_adapter_goes_live_once(cfg: Settings, engine: Engine, tmp_path: Path):
    """ITSM_MODEL__ADAPTER naming an adapter the registry never saw deploys it; one it knows never overrides."""
    registry.bootstrap(engine, cfg, adapter_dir(tmp_path, "shipped"))
    first_day = adapter_dir(tmp_path, "first-day")
    configured = cfg.model_copy(update={"model": cfg.model.model_copy(update={"adapter": str(first_day)})})
    live = registry.ensure_live(engine, configured, first_day)
    assert (live.version, live.promoted_via, live.replaced_id) == ("v2", "config", 1)
    registry.rollback(engine, actor="ops", reason="first day went badly")
    assert registry.ensure_live(engine, configured, first_day).version == "v1"  # the registry's word stands


def test_files_travel_through_the_database_into_a_cache_by_hash(cfg: Settings, engine: Engine, tmp_path: Path):
    src = adapter_dir(tmp_path, "shipped")
    row = registry.bootstrap(engine, cfg, src)
    d = store.materialize(engine, cfg, row)
    assert d == cfg.learning.cache_dir / row.sha256 and (d / store.COMPLETE).exists()
    assert sorted(p.name for p in d.iterdir() if p.name != store.COMPLETE) == sorted(p.name for p in src.iterdir())
    assert (d / "triage.json").read_bytes() == (src / "triage.json").read_bytes()
    assert store.materialize(engine, cfg, row) == d  # cached: no second fetch
    assert store.pack(src) == store.pack(src)  # deterministic: the same files, the same hash
    with Session(engine) as s:  # altered files in the database are refused, never unpacked
        blob = s.get(AdapterBlob, row.sha256)
        assert blob is not None
        blob.data = store.pack(adapter_dir(tmp_path, "other"))
        s.add(blob)
        s.commit()
    fresh = cfg.model_copy(update={"learning": cfg.learning.model_copy(update={"cache_dir": tmp_path / "c2"})})
    with pytest.raises(store.StoreError, match="do not match their hash"):
        store.materialize(engine, fresh, row)


def test_a_directory_store_keeps_the_files_out_of_the_database(cfg: Settings, engine: Engine, tmp_path: Path):
    bucket = tmp_path / "bucket"
    dcfg = cfg.model_copy(update={"learning": cfg.learning.model_copy(update={"store_dir": bucket})})
    row = registry.bootstrap(engine, dcfg, adapter_dir(tmp_path, "shipped"))
    assert row.storage == "dir" and (bucket / f"{row.sha256}.tar.gz").exists()
    with Session(engine) as s:
        assert s.exec(select(AdapterBlob)).first() is None
    assert (store.materialize(engine, dcfg, row) / "triage.json").exists()
    with pytest.raises(store.StoreError, match="ITSM_LEARNING__STORE_DIR is not set"):
        store.fetch(engine, cfg, row)


def test_an_archive_with_links_or_paths_outside_is_refused(tmp_path: Path):
    import io
    import tarfile

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        info = tarfile.TarInfo("../escape.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(tarfile.OutsideDestinationError):
        store.unpack(raw.getvalue(), tmp_path / "out")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w:gz") as tar:
        link = tarfile.TarInfo("link")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    with pytest.raises(store.StoreError, match="only regular files"):
        store.unpack(raw.getvalue(), tmp_path / "out2")
    assert not (tmp_path / "escape.txt").exists()
