"""A helpdesk around the service for the learning-loop tests: tickets arrive as signed Jira webhooks through the API,
the workers' two stages label and draft them with whatever adapter the registry has live, agents approve the drafts
in review and move tickets to the right queue in Jira (an agent's changelog webhook: a label correction, which is
how a queue the adapter has never heard of reaches the service)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from service.domain.ports import Triager
from service.domain.tables import InboundEvent, Suggestion, SuggestionStatus, Ticket, Triage
from service.queue import make_celery
from service.review import actions
from service.samples import as_new_ticket, load_sample, make_delivery
from service.settings import Settings
from tests.conftest import JIRA_SECRET
from tests.learning.tickets import Sample
from tests.workers.conftest import Recorder
from workers.drafts import DraftContext, draft_triage
from workers.pipeline import PipelineContext, triage_event


class Desk:
    """Tickets in, the two worker stages, agents' reviews; `truth` keeps each ticket's real labels by key."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        api: TestClient,
        triager: Callable[[], Triager],
        *,
        learn: Callable[[Triager], object] | None = None,
        shadow: Callable[[], tuple[int, Triager] | None] | None = None,
    ) -> None:
        self.settings, self.engine, self.api = settings, engine, api
        self.pipeline = PipelineContext(engine, settings, triager, Recorder(), learn=learn, shadow=shadow)
        self.drafts = DraftContext(engine, settings, triager, Recorder(), learn=learn)
        self.celery = make_celery(settings)
        self.truth: dict[str, Sample] = {}
        self._n = 0

    def arrive(self, samples: Sequence[Sample]) -> list[str]:
        """Post each ticket as a Jira issue_created webhook; their keys."""
        keys = []
        for s in samples:
            self._n += 1
            payload = as_new_ticket(load_sample("jira_issue_created"), self._n, subject=s.subject, body=s.body)
            key = payload["issue"]["key"]
            sent = _signed(payload)
            response = self.api.post("/webhooks/jira", content=sent.body, headers=sent.headers)
            assert response.status_code == 202, response.text
            self.truth[key] = s
            keys.append(key)
        return keys

    def work(self) -> None:
        """Both worker stages over everything waiting: labels first, then the drafts they handed over."""
        with Session(self.engine) as session:
            waiting = session.exec(
                select(InboundEvent.id).where(col(InboundEvent.status).in_(("received", "queued", "failed")))
            ).all()
        for event_id in waiting:
            report = triage_event(self.pipeline, int(event_id or 0))
            for triage_id in report.drafts:
                draft_triage(self.drafts, triage_id)

    def review(self, keys: Sequence[str], queue_of: Callable[[Sample], str] | None = None) -> int:
        """Agents review these tickets in order: approve the draft (sending the ticket's real reply), and where the
        queue is not the one the ticket belongs to (`queue_of`, else its true queue) or the priority is wrong, change
        it in Jira. Returns how many tickets were moved to another queue."""
        moved = 0
        for key in keys:
            truth = self.truth[key]
            want = queue_of(truth) if queue_of else truth.queue
            triage, suggestion = self._latest(key)
            if suggestion is not None and suggestion.status == SuggestionStatus.pending:
                actions.approve(  # the reply the agent really sent (an edit when it differs from the draft)
                    self.engine,
                    self.celery,
                    suggestion_id=suggestion.id or 0,
                    actor="agent",
                    version=None,
                    reply=truth.reply or None,
                )
            changes = {}
            for name, value in (("queue", want), ("priority", truth.priority)):
                predicted = (triage.predictions.get(name) or {}).get("label")
                if predicted != value:
                    changes[name] = (predicted, value)
            if changes:
                sent = _signed(_agent_moves(key, truth, changes))
                response = self.api.post("/webhooks/jira", content=sent.body, headers=sent.headers)
                assert response.status_code == 202 and response.json()["status"] == "applied", response.text
                moved += "queue" in changes
        return moved

    def triage_of(self, key: str) -> Triage:
        """The latest triage of a ticket."""
        return self._latest(key)[0]

    def _latest(self, key: str) -> tuple[Triage, Suggestion | None]:
        with Session(self.engine) as session:
            ticket = session.exec(select(Ticket).where(Ticket.external_key == key)).one()
            triage = session.exec(
                select(Triage).where(Triage.ticket_id == ticket.id).order_by(col(Triage.id).desc())
            ).first()
            assert triage is not None, f"{key} was not triaged"
            suggestion = session.exec(select(Suggestion).where(Suggestion.triage_id == triage.id)).first()
            return triage, suggestion


def _signed(payload: dict[str, Any]) -> Any:
    return make_delivery(payload, secret=JIRA_SECRET)


def _agent_moves(key: str, truth: Sample, changes: dict[str, tuple[str | None, str]]) -> dict[str, Any]:
    """An agent's issue_updated webhook (a newer version of the issue): the Component and/or the priority changed
    from the predicted label to the right one (priorities by their Jira names, as Jira sends them)."""
    data = copy.deepcopy(load_sample("jira_issue_updated_by_agent"))
    n = int(key.split("-")[1]) - 100000
    issue = data["issue"]
    issue["id"], issue["key"] = str(900000 + n), key
    fields = issue["fields"]
    fields["summary"], fields["description"] = truth.subject, truth.body
    time.sleep(0.002)  # a later version than the creation's timestamp
    now = datetime.now(UTC)
    fields["updated"] = now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}+0000"
    data["timestamp"] = int(now.timestamp() * 1000)
    items = []
    if "queue" in changes:
        old, new = changes["queue"]
        fields["components"] = [{"name": new}]
        items.append({"field": "Component", "fieldtype": "jira", "fieldId": "components", "fromString": old,
                      "toString": new})  # fmt: skip
    if "priority" in changes:
        old, new = changes["priority"]
        names = Settings().jira.priority_map
        fields["priority"] = {"name": names[new]}
        items.append({"field": "priority", "fieldtype": "jira", "fieldId": "priority",
                      "fromString": names.get(old or "", old), "toString": names[new]})  # fmt: skip
    data["changelog"]["items"] = items
    return data
