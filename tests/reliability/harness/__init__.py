"""Reliability harness: fault proxy, throwaway servers, the service as subprocesses, and invariant checks."""

from tests.reliability.harness.ledger import (
    Ledger,
    Snapshot,
    comment_counts,
    jira_issue_id,
    jira_ticket,
    lost_and_duplicated,
    post,
    send_paced,
    servicenow_ticket,
    wait_until,
)
from tests.reliability.harness.proxy import FaultProxy, Faults
from tests.reliability.harness.servers import PostgresServer, RedisServer, free_port, proc_stat, tree_stat, wait_port
from tests.reliability.harness.service import (
    BOT_ACCOUNT_ID,
    JIRA_SECRET,
    SN_SECRET,
    ApiProcess,
    ServiceProcess,
    WorkerProcess,
    service_env,
)
from tests.reliability.harness.stack import Stack, make_workdir

__all__ = [
    "BOT_ACCOUNT_ID",
    "JIRA_SECRET",
    "SN_SECRET",
    "ApiProcess",
    "FaultProxy",
    "Faults",
    "Ledger",
    "PostgresServer",
    "RedisServer",
    "ServiceProcess",
    "Snapshot",
    "Stack",
    "WorkerProcess",
    "comment_counts",
    "free_port",
    "jira_issue_id",
    "jira_ticket",
    "lost_and_duplicated",
    "make_workdir",
    "post",
    "proc_stat",
    "send_paced",
    "service_env",
    "servicenow_ticket",
    "tree_stat",
    "wait_port",
    "wait_until",
]
