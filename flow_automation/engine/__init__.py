"""The engine: what a flow means, with no Frappe and no I/O.

This module is the engine's public surface: the Frappe adapter (and anyone else) imports
from `flow_automation.engine`, never from its modules. Importing it also loads every step
kind into the catalog (the core kinds live in `catalog`, channel kinds register
themselves when their module loads), so every reader sees the same kinds.
"""

# The kinds: the one loader. Channel kinds register with catalog.register on import.
from flow_automation.engine import data_kinds as _data_kinds
from flow_automation.engine import experiment_kinds as _experiment_kinds
from flow_automation.engine import fanout_kinds as _fanout_kinds
from flow_automation.engine import output_kinds as _output_kinds
from flow_automation.engine import whatsapp_kinds as _whatsapp_kinds
from flow_automation.engine.catalog import (
	StepKind,
	all_kinds,
	get_kind,
	kind_names,
	notify_channel,
	sms_number,
)
from flow_automation.engine.conditions import ConditionError, check_condition
from flow_automation.engine.conditions import evaluate as evaluate_condition
from flow_automation.engine.data_kinds import (
	lookup_outcome,
	lookup_request,
	output_too_large,
	script_error_line,
	script_fingerprints,
	script_timeout,
)
from flow_automation.engine.definition import (
	DELAY_UNITS,
	STEP_TRIGGERS,
	Definition,
	Step,
	extract_definition,
)
from flow_automation.engine.fanout_kinds import fan_out, fan_out_started, results_output, simulated_outcome
from flow_automation.engine.outcome import Outcome, StepError
from flow_automation.engine.output_kinds import pdf_file_name
from flow_automation.engine.pii import redact
from flow_automation.engine.planner import (
	AdvanceResult,
	Attempt,
	EngineError,
	Event,
	Host,
	Timer,
	advance,
	restored_timers,
	retry_steps,
)
from flow_automation.engine.planner import cancel as cancel_steps
from flow_automation.engine.quiet_hours import DAYS as QUIET_HOURS_DAYS
from flow_automation.engine.quiet_hours import check_window as check_quiet_hours
from flow_automation.engine.simulator import SimulationResult, simulate
from flow_automation.engine.state import (
	ACTIVE_RUN_STATUSES,
	FAN_OUT,
	FINISHED_RUN_STATUSES,
	GATE,
	REPLY,
	SUB_FLOW,
	RunStatus,
	StepEntry,
	StepState,
	StepStatus,
	attempt_group,
	dump_state,
	entry_of,
	load_state,
	status_of,
	waiting_for,
	waits_for_child,
)
from flow_automation.engine.validation import ValidationIssue, definition_json_schema, validate_definition
from flow_automation.engine.whatsapp_kinds import (
	ask_wait,
	content_fingerprint,
	dedup_minutes,
	fallback_payload,
	media_type_of,
	message_body,
	question_payload,
	send_mode,
)

__all__ = [
	"ACTIVE_RUN_STATUSES",
	"DELAY_UNITS",
	"FAN_OUT",
	"FINISHED_RUN_STATUSES",
	"GATE",
	"QUIET_HOURS_DAYS",
	"REPLY",
	"STEP_TRIGGERS",
	"SUB_FLOW",
	"AdvanceResult",
	"Attempt",
	"ConditionError",
	"Definition",
	"EngineError",
	"Event",
	"Host",
	"Outcome",
	"RunStatus",
	"SimulationResult",
	"Step",
	"StepEntry",
	"StepError",
	"StepKind",
	"StepState",
	"StepStatus",
	"Timer",
	"ValidationIssue",
	"advance",
	"all_kinds",
	"ask_wait",
	"attempt_group",
	"cancel_steps",
	"check_condition",
	"check_quiet_hours",
	"content_fingerprint",
	"dedup_minutes",
	"definition_json_schema",
	"dump_state",
	"entry_of",
	"evaluate_condition",
	"extract_definition",
	"fallback_payload",
	"fan_out",
	"fan_out_started",
	"get_kind",
	"kind_names",
	"load_state",
	"lookup_outcome",
	"lookup_request",
	"media_type_of",
	"message_body",
	"notify_channel",
	"output_too_large",
	"pdf_file_name",
	"question_payload",
	"redact",
	"restored_timers",
	"results_output",
	"retry_steps",
	"script_error_line",
	"script_fingerprints",
	"script_timeout",
	"send_mode",
	"simulate",
	"simulated_outcome",
	"sms_number",
	"status_of",
	"validate_definition",
	"waiting_for",
	"waits_for_child",
]
