"""Step handlers: one function per host-executed step kind (the side effects).

Each handler takes a `StepCall` and returns an output dict (the step is done), an
`Outcome` (waiting, a branch, ...) or raises `StepError` / a Frappe exception (the step
failed). The runtime wraps every call in its own savepoint.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from flow_automation.engine.definition import Step


@dataclass
class StepCall:
	run: Any  # the Flow Run (a Document, or a dict-like stand-in during a dry run)
	step: Step
	payload: Mapping[str, Any]
	context: Mapping[str, Any]
	attempt: int
	idempotency_key: str  # {run}:{step}:{attempt group}: the same for every retry of one attempt group
	dry_run: bool
	host: Any

	def record(self, action: str, **details: Any) -> None:
		"""Note an outbound call that a dry run did not make."""
		self.host.recorded.append({"step": self.step.id, "kind": self.step.kind, "action": action, **details})


Handler = Callable[[StepCall], Any]


def _handlers() -> dict[str, Handler]:
	from flow_automation.steps import documents, flows, http, notify, whatsapp

	return {
		"create_document": documents.create_document,
		"update_document": documents.update_document,
		"assign": documents.assign,
		"notify": notify.notify,
		"webhook": http.webhook,
		"start_flow": flows.start_flow,
		"send_whatsapp": whatsapp.send_whatsapp,
		"ask": whatsapp.ask,
		"ask:reprompt": whatsapp.reprompt,
		"ask:release": whatsapp.release,
	}


_registry: dict[str, Handler] = {}


def get_handler(kind: str) -> Handler | None:
	if not _registry:
		_registry.update(_handlers())
	return _registry.get(kind)


def perform_effect(host: Any, step: Step, effect: Mapping[str, Any], context: Mapping[str, Any]) -> None:
	"""Side effects requested while a waiting step resumes (used by channel kinds)."""
	handler = get_handler(f"{step.kind}:{effect.get('type')}")
	if handler is None:
		raise ValueError(f"no handler for effect {effect.get('type')!r} of step kind {step.kind!r}")
	group = ((context.get("steps") or {}).get(step.id) or {}).get("attempt_group") or 1
	# each effect names itself (`key`, e.g. the re-ask number): one key per distinct effect
	key = f"{host.run.name}:{step.id}:{group}:{effect.get('type')}:{effect.get('key') or ''}"
	handler(StepCall(host.run, step, effect, context, 0, key, host.dry_run, host))
