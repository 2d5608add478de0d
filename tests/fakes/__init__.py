"""Fake remote ITSM systems (Jira/JSM, ServiceNow) as real local HTTP servers, with fault injection."""

from tests.fakes._server import FakeServer, Fault, Recorded, Reply
from tests.fakes.fake_jira import FakeJira
from tests.fakes.fake_servicenow import FakeServiceNow

__all__ = ["FakeJira", "FakeServer", "FakeServiceNow", "Fault", "Recorded", "Reply"]
