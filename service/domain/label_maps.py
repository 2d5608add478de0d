"""Do the configured label maps fit the live adapter? Warnings for labels a map names that the adapter cannot
produce (the default priority maps name P1, which the shipped adapter never predicts) and for labels the adapter
produces that a non-empty map leaves out (they are then written verbatim, or not at all for priority).

Pure: the caller reads the adapter's label sets (models.adapter.read_meta, no torch) and passes them in, so the
API process never imports models; the worker calls this at start-up and `itsm-triage config show` prints it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from service.settings import Settings

PRIORITY_FIELD = "priority"


@dataclass(frozen=True)
class MapWarning:
    """One mismatch between a settings map and the adapter's label set of a field."""

    setting: str  # the environment variable
    field: str  # the predicted field the map translates
    kind: str  # "never_produced" | "not_covered"
    labels: tuple[str, ...]

    def message(self) -> str:
        """One line for the log and for `config show`."""
        labels = ", ".join(self.labels)
        if self.kind == "never_produced":
            return f"{self.setting} names {self.field} labels the adapter cannot produce: {labels}"
        return f"{self.setting} does not cover {self.field} labels the adapter produces: {labels}"


def _maps(settings: Settings) -> Iterable[tuple[str, str, Iterable[str], bool]]:
    """(variable, field, labels the map names, whether a label left out is a problem even when the map is empty)."""
    category = settings.category_label_field
    yield "ITSM_JIRA__PRIORITY_MAP", PRIORITY_FIELD, settings.jira.priority_map, True
    yield "ITSM_JIRA__CATEGORY_MAP", category, settings.jira.category_map, False
    yield "ITSM_SERVICENOW__PRIORITY_MAP", PRIORITY_FIELD, settings.servicenow.priority_map, True
    yield "ITSM_SERVICENOW__CATEGORY_MAP", category, settings.servicenow.category_map, False
    yield "ITSM_SERVICENOW__ASSIGNMENT_GROUP_MAP", category, settings.servicenow.assignment_group_map, False


def map_warnings(settings: Settings, produced: Mapping[str, Sequence[str]]) -> list[MapWarning]:
    """Mismatches between every label map in `settings` and the adapter's label sets (`field -> labels`)."""
    out: list[MapWarning] = []
    for setting, field, named, always in _maps(settings):
        labels = produced.get(field)
        if labels is None:
            continue  # the adapter does not predict this field: nothing to compare
        named_set, produced_set = set(named), set(labels)
        if extra := sorted(named_set - produced_set):
            out.append(MapWarning(setting, field, "never_produced", tuple(extra)))
        if (named_set or always) and (missing := sorted(produced_set - named_set)):
            out.append(MapWarning(setting, field, "not_covered", tuple(missing)))
    return out
