"""The runtime: the Frappe adapter around the engine. Read it top to bottom:

- `store`      persistence: pinned definitions, the run row lock, one write per advance, step
               logs, timers (Flow Step Pending rows)
- `context`    what steps see and run as: the document as data, Run As, the flow depth
- `start`      creating Queued runs and the job that gets them going
- `batch`      a run per item (a schedule's for-each, a for_each step), N at a time
- `host`       the engine's Host: step handlers (`flow_automation.steps`), one savepoint each
- `advance`    lock → engine → persist, and `conclude`, the one ending of every state change
- `lifecycle`  the `flow_run_finished` hooks (failures, WhatsApp, other apps)
- `operator`   cancel, fail, retry
- `dry_run`    a template executed and rolled back
- `timeline`   a run read step by step

Everything else in the app uses the names exported here.
"""

from typing import Any

from flow_automation.runtime.advance import advance_run, complete_step, start_job, start_queued_run
from flow_automation.runtime.batch import BatchItem, StartedBatch, start_batch, startable
from flow_automation.runtime.context import depth_of_caller, document_context
from flow_automation.runtime.dry_run import simulate_template
from flow_automation.runtime.lifecycle import FinishedRun
from flow_automation.runtime.operator import cancel_run, fail_run, retry_steps
from flow_automation.runtime.start import (
	ActiveRunExists,
	check_document,
	create_run,
	enqueue_start,
	kick,
	kicks_held,
	template_info,
)
from flow_automation.runtime.store import (
	RunNotFound,
	add_timers,
	has_active_run,
	load_definition,
	lock_runs,
	log_step_event,
	step_state,
)
from flow_automation.runtime.timeline import run_timeline


def start_run(template: str, *, advance: str = "async", **details: Any) -> str:
	"""Create a run of `template` (`details` as for `create_run`: the document, variables,
	trigger, contact, dedup key) and get it going; returns the run name.

	`advance`: "async" (a background job after commit), "now" (in this transaction) or
	"none" (the caller advances it, or the minute cron does).
	"""
	name = create_run(template, **details)
	if advance == "now":
		advance_run(name)
	elif advance == "async":
		kick(name)
	return name


__all__ = [
	"ActiveRunExists",
	"BatchItem",
	"FinishedRun",
	"RunNotFound",
	"StartedBatch",
	"add_timers",
	"advance_run",
	"cancel_run",
	"check_document",
	"complete_step",
	"create_run",
	"depth_of_caller",
	"document_context",
	"enqueue_start",
	"fail_run",
	"has_active_run",
	"kick",
	"kicks_held",
	"load_definition",
	"lock_runs",
	"log_step_event",
	"retry_steps",
	"run_timeline",
	"simulate_template",
	"start_batch",
	"start_job",
	"start_queued_run",
	"start_run",
	"startable",
	"step_state",
	"template_info",
]
