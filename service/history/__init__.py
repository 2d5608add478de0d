"""Day one: an operator's resolved tickets from Jira / ServiceNow, streamed into the file `itsm-triage train` reads."""
