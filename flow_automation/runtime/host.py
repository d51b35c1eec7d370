"""The engine's Host on a real site: step handlers run here, each inside its own savepoint."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import frappe
from frappe.utils import strip_html

from flow_automation.engine import Definition, Outcome, Step, StepError, attempt_group
from flow_automation.runtime.batch import BatchItem, batch_children, child_key, release, start_batch
from flow_automation.runtime.context import document_context
from flow_automation.runtime.start import FOR_EACH, create_run
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
		self.kicks: list[str] = []  # for_each children let start: kicked once this run's state is written
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

	def perform(self, step: Step, effect: Mapping[str, Any], context: Mapping[str, Any]) -> Any:
		"""Side effects requested while a waiting step resumes (channel kinds, for_each); what
		the handler returns is added to the step's output."""
		handler = handler_for(f"{step.kind}:{effect.get('type')}")
		if handler is None:
			raise ValueError(f"no handler for effect {effect.get('type')!r} of step kind {step.kind!r}")
		group = attempt_group(context.get("steps") or {}, step.id)
		# each effect names itself (`key`, e.g. the re-ask number): one key per distinct effect
		key = f"{self.run.name}:{step.id}:{group}:{effect.get('type')}:{effect.get('key') or ''}"
		return handler(StepCall(self.run, step, effect, context, 0, key, self.dry_run, self))

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

	def start_children(
		self,
		step: Step,
		template: str,
		children: Sequence[tuple[str | None, str | None, Mapping[str, Any]]],
		*,
		batch: str,
		concurrency: int,
	) -> list[str]:
		"""Write one Queued sub-flow per (doctype, name, variables) of a for_each step, in order,
		and let the first `concurrency` start (kicked once this run's state is written). A child
		that cannot be written fails the step, naming its item; the step's savepoint then undoes
		the others, so nothing starts."""
		run = self.run

		def refused(position: int, item: BatchItem, error: Exception) -> None:
			raise StepError(
				f"items/{position}: {strip_html(str(error)) or type(error).__name__}", retryable=False
			)

		started = start_batch(
			template,
			(
				BatchItem(doctype, name, variables, child_key(batch, index), {"index": index})
				for index, (doctype, name, variables) in enumerate(children)
			),
			trigger={"type": FOR_EACH, "parent_run": run.name, "parent_step": step.id, "batch": batch},
			concurrency=concurrency,
			parent_run=run.name,
			parent_step=step.id,
			depth=(run.depth or 0) + 1,
			contact=run.contact,
			refused=refused,
			start=None,
		)
		self.kicks.extend(started.released)
		return [name for name in started.runs if name]

	def release_children(self, step: Step, batch: str, indexes: Sequence[int]) -> list[str]:
		"""Let these held children of the step's batch start (kicked once this run's state is written)."""
		names = release(self.run.name, batch, indexes)
		self.kicks.extend(names)
		return names

	def children_of_batch(self, step: Step, batch: str) -> list[dict[str, Any]]:
		"""The batch's children as they ended ({index, run, status, variables, error}), read
		with a locking read so none is seen as it was before this transaction began."""
		return batch_children(self.run.name, batch, lock=True)


def classify(error: BaseException) -> tuple[bool, str]:
	"""(retryable, message): bad input does not get better by waiting, outages might."""
	if isinstance(error, StepError):
		return error.retryable, str(error)
	message = strip_html(str(error)) or type(error).__name__
	if isinstance(error, frappe.ValidationError | frappe.PermissionError | frappe.DoesNotExistError):
		return False, f"{type(error).__name__}: {message}"
	return True, f"{type(error).__name__}: {message}"
