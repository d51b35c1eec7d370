"""The engine's Host on a real site: step handlers run here, each inside its own savepoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import frappe
from frappe.utils import strip_html

from flow_automation.engine import Definition, Outcome, Step, StepError, attempt_group
from flow_automation.runtime.context import document_context
from flow_automation.runtime.start import create_run
from flow_automation.steps import StepCall, handler_for
from flow_automation.transaction import isolated


class FrappeHost:
	"""Executes a run's host steps: side effects through the handlers in `flow_automation.steps`.

	A failing handler rolls back only its own step (a savepoint per call); its error becomes
	the step's, with the traceback kept for the log when it was a bug rather than bad input.
	"""

	def __init__(self, run: Any, definition: Definition, *, dry_run: bool = False):
		self.run = run
		self.definition = definition
		self.dry_run = dry_run
		self.children: list[str] = []  # sub-flows started: advanced once this run's state is written
		self.tracebacks: dict[tuple[str, int], str] = {}
		self.recorded: list[dict[str, Any]] = []  # what a dry run would have sent

	def execute(
		self, step: Step, payload: Mapping[str, Any], context: Mapping[str, Any], attempt: int
	) -> Outcome:
		handler = handler_for(step.kind)
		if handler is None:
			return Outcome.failed(f"no handler is installed for step kind '{step.kind}'", retryable=False)
		# a manual retry starts a new attempt group: a new key, so the side effect happens again
		key = f"{self.run.name}:{step.id}:{attempt_group(context.get('steps') or {}, step.id)}"
		call = StepCall(self.run, step, payload, context, attempt, key, self.dry_run, self)
		with isolated() as block:
			result = handler(call)
		if block.failed:
			retryable, message = classify(block.error)
			if not isinstance(block.error, StepError | frappe.ValidationError):
				self.tracebacks[(step.id, attempt)] = block.traceback
			return Outcome.failed(message, retryable=retryable)
		return result if isinstance(result, Outcome) else Outcome.done(result)

	def reload_document(self) -> Mapping[str, Any] | None:
		return document_context(self.run.reference_doctype, self.run.reference_name)

	def perform(self, step: Step, effect: Mapping[str, Any], context: Mapping[str, Any]) -> None:
		"""Side effects requested while a waiting step resumes (used by channel kinds)."""
		handler = handler_for(f"{step.kind}:{effect.get('type')}")
		if handler is None:
			raise ValueError(f"no handler for effect {effect.get('type')!r} of step kind {step.kind!r}")
		group = attempt_group(context.get("steps") or {}, step.id)
		# each effect names itself (`key`, e.g. the re-ask number): one key per distinct effect
		key = f"{self.run.name}:{step.id}:{group}:{effect.get('type')}:{effect.get('key') or ''}"
		handler(StepCall(self.run, step, effect, context, 0, key, self.dry_run, self))

	def start_child(
		self, step: Step, template: str, *, variables: Mapping[str, Any], with_document: bool
	) -> str:
		run = self.run
		child = create_run(
			template,
			reference_doctype=run.reference_doctype if with_document else None,
			reference_name=run.reference_name if with_document else None,
			variables=variables,
			trigger={"type": "Sub-flow", "parent_run": run.name, "parent_step": step.id},
			contact=run.contact,
			parent_run=run.name,
			parent_step=step.id,
			depth=(run.depth or 0) + 1,
		)
		# advanced after the parent's state is written, so a child that finishes at once finds
		# its parent already waiting
		self.children.append(child)
		return child


def classify(error: BaseException) -> tuple[bool, str]:
	"""(retryable, message): bad input does not get better by waiting, outages might."""
	if isinstance(error, StepError):
		return error.retryable, str(error)
	message = strip_html(str(error)) or type(error).__name__
	if isinstance(error, frappe.ValidationError | frappe.PermissionError | frappe.DoesNotExistError):
		return False, f"{type(error).__name__}: {message}"
	return True, f"{type(error).__name__}: {message}"
