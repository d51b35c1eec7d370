"""What a step handler gets (`StepCall`) and how handlers register (`handles`).

A handler takes a `StepCall` and returns an output dict (the step is done), an `Outcome`
(waiting, a branch, a failure it recorded itself) or raises `StepError` / a Frappe
exception (the step failed and its writes are rolled back). The host runs every call in
its own savepoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from flow_automation.engine import Step, StepError
from flow_automation.settings import max_recursion_depth


class StepHost(Protocol):
	"""What handlers may ask of the run executing them (the runtime's FrappeHost)."""

	recorded: list[dict[str, Any]]

	def start_child(
		self,
		step: Step,
		template: str,
		*,
		variables: Mapping[str, Any],
		with_document: bool,
	) -> str:
		"""Start a sub-flow of this run (advanced after this run's state is written)."""
		...


@dataclass
class StepCall:
	run: Any  # the Flow Run (a Document, or a dict-like stand-in during a dry run)
	step: Step
	payload: Mapping[str, Any]
	context: Mapping[str, Any]
	attempt: int
	idempotency_key: str  # {run}:{step}:{attempt group}: the same for every retry of one attempt group
	dry_run: bool
	host: StepHost

	def record(self, action: str, **details: Any) -> None:
		"""Note an outbound call that a dry run did not make."""
		self.host.recorded.append({"step": self.step.id, "kind": self.step.kind, "action": action, **details})


def check_child_depth(call: StepCall) -> None:
	"""A sub-flow of this run would be within the site's nesting limit, or a StepError says not."""
	depth = (call.run.depth or 0) + 1
	if depth > max_recursion_depth():
		raise StepError(
			f"sub-flow depth {depth} is over the limit of {max_recursion_depth()}", retryable=False
		)


Handler = Callable[[StepCall], Any]
HANDLERS: dict[str, Handler] = {}


def handles(kind: str) -> Callable[[Handler], Handler]:
	"""Register a handler for a host-executed step kind (or `kind:effect` for effects a waiting
	step requests, e.g. `ask:reprompt`)."""

	def register(handler: Handler) -> Handler:
		HANDLERS[kind] = handler
		return handler

	return register
