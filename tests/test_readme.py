"""The README's promises stay true: its settings table is the generated one, and it names both commands."""

from __future__ import annotations

from service.config_doc import END, START, render_into
from tests.conftest import REPO


def test_readme_settings_table_matches_the_settings_class() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert START in readme and END in readme
    assert render_into(readme) == readme, "run: itsm-triage config table --readme README.md"


def test_readme_names_the_two_commands_and_make_defines_them() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in ("run", "test"):
        assert f"make {target}" in readme
        assert f"\n{target}:" in makefile
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")
