"""The flow definition: the JSON a template compiles to and a run pins (DESIGN.md §2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

DEFINITION_VERSION = 1

STEP_TRIGGERS: tuple[str, ...] = (
	"on_flow_start",
	"on_prev_complete",
	"after_delay",
	"on_date",
	"on_webhook",
	"manual",
)
# Triggers that hold a ready step until someone completes it from outside.
GATE_TRIGGERS = frozenset({"on_webhook", "manual"})
DELAY_UNITS: tuple[str, ...] = ("minutes", "hours", "days")
ON_ERROR: tuple[str, ...] = ("fail", "continue", "branch")
ERROR_BRANCH = "error"

DEFAULT_MAX_ATTEMPTS = 1
DEFAULT_BACKOFF_SECONDS = 60.0
DEFAULT_MAX_BACKOFF_SECONDS = 6 * 3600.0


@dataclass(frozen=True)
class RetryPolicy:
	"""How often a failing step is tried and how long to wait between tries."""

	max_attempts: int = DEFAULT_MAX_ATTEMPTS
	backoff_seconds: float = DEFAULT_BACKOFF_SECONDS
	max_backoff_seconds: float = DEFAULT_MAX_BACKOFF_SECONDS

	@classmethod
	def from_dict(cls, raw: Mapping[str, Any] | None) -> RetryPolicy:
		raw = raw or {}
		return cls(
			max_attempts=int(raw.get("max_attempts") or DEFAULT_MAX_ATTEMPTS),
			backoff_seconds=float(raw.get("backoff_seconds", DEFAULT_BACKOFF_SECONDS)),
			max_backoff_seconds=float(raw.get("max_backoff_seconds", DEFAULT_MAX_BACKOFF_SECONDS)),
		)


@dataclass(frozen=True)
class Step:
	id: str
	kind: str
	label: str = ""
	parent_id: str | None = None
	branch: str | None = None
	depends_on: tuple[str, ...] = ()
	trigger: Mapping[str, Any] = field(default_factory=dict)
	payload: Mapping[str, Any] = field(default_factory=dict)
	retry: RetryPolicy = field(default_factory=RetryPolicy)
	on_error: str = "fail"
	# Message steps only: True = the flow's quiet hours (the default), False/None = none, or
	# a window of its own (engine/quiet_hours.py).
	quiet_hours: Any = True

	# cached on the instance (its fields never change): the planner asks for every step it looks at
	@cached_property
	def predecessors(self) -> tuple[str, ...]:
		"""Every step that must finish before this one may start."""
		return ((self.parent_id,) if self.parent_id else ()) + tuple(
			d for d in self.depends_on if d != self.parent_id
		)

	@cached_property
	def trigger_type(self) -> str:
		return self.trigger.get("type") or ("on_prev_complete" if self.predecessors else "on_flow_start")

	@property
	def title(self) -> str:
		return self.label or self.id


@dataclass(frozen=True)
class Definition:
	steps: tuple[Step, ...]
	variables: Mapping[str, Any] = field(default_factory=dict)
	version: int = DEFINITION_VERSION
	# The hours message steps may run in (a quiet-hours window), unless a step says otherwise.
	quiet_hours: Mapping[str, Any] | None = None

	def __post_init__(self) -> None:
		# The graph, derived once per definition: a run's planner reads it on every wave.
		by_id = {s.id: s for s in self.steps}
		order = _topological_order(self.steps)
		successors: dict[str, dict[str, None]] = {}  # (a dict: ordered, each successor once)
		for step in order:
			for predecessor in step.predecessors:
				if predecessor in by_id:
					successors.setdefault(predecessor, {})[step.id] = None
		object.__setattr__(self, "_by_id", by_id)
		object.__setattr__(self, "_order", order)
		object.__setattr__(self, "_position", {s.id: i for i, s in enumerate(order)})
		object.__setattr__(self, "_successors", {k: tuple(v) for k, v in successors.items()})
		object.__setattr__(
			self,
			"_dependencies",
			{s.id: tuple(d for d in s.depends_on if d != s.parent_id and d in by_id) for s in self.steps},
		)

	@property
	def ordered_steps(self) -> tuple[Step, ...]:
		"""Steps with every step after all of its predecessors (declaration order otherwise)."""
		return self._order  # type: ignore[attr-defined]

	def step(self, step_id: str) -> Step:
		return self._by_id[step_id]  # type: ignore[attr-defined]

	def has_step(self, step_id: str) -> bool:
		return step_id in self._by_id  # type: ignore[attr-defined]

	def position(self, step_id: str) -> int:
		"""The step's index in `ordered_steps`."""
		return self._position[step_id]  # type: ignore[attr-defined]

	def successors(self, step_id: str) -> tuple[str, ...]:
		"""The steps that name this one as their parent or in `depends_on`, in `ordered_steps` order."""
		return self._successors.get(step_id, ())  # type: ignore[attr-defined]

	def dependencies(self, step_id: str) -> tuple[str, ...]:
		"""The steps of this step's `depends_on` that the flow has, other than its parent."""
		return self._dependencies[step_id]  # type: ignore[attr-defined]

	@classmethod
	def from_dict(cls, raw: Mapping[str, Any]) -> Definition:
		"""Build from already-validated JSON (see `validation.parse_definition`)."""
		steps = tuple(
			Step(
				id=s["id"],
				kind=s["kind"],
				label=s.get("label") or "",
				parent_id=s.get("parent_id") or None,
				branch=_branch_name(s.get("branch")),
				depends_on=tuple(s.get("depends_on") or ()),
				trigger=dict(s.get("trigger") or {}),
				payload=dict(s.get("payload") or {}),
				retry=RetryPolicy.from_dict(s.get("retry")),
				on_error=s.get("on_error") or "fail",
				quiet_hours=s.get("quiet_hours", True),
			)
			for s in raw.get("steps") or ()
		)
		return cls(
			steps=steps,
			variables=dict(raw.get("variables") or {}),
			version=raw.get("version", 1),
			quiet_hours=raw.get("quiet_hours") or None,
		)

	def to_dict(self) -> dict[str, Any]:
		flow: dict[str, Any] = {"quiet_hours": dict(self.quiet_hours)} if self.quiet_hours else {}
		return {
			"version": self.version,
			"variables": dict(self.variables),
			**flow,
			"steps": [
				{
					"id": s.id,
					"kind": s.kind,
					"label": s.label,
					"parent_id": s.parent_id,
					"branch": s.branch,
					"depends_on": list(s.depends_on),
					"trigger": dict(s.trigger),
					"payload": dict(s.payload),
					"retry": {
						"max_attempts": s.retry.max_attempts,
						"backoff_seconds": s.retry.backoff_seconds,
						"max_backoff_seconds": s.retry.max_backoff_seconds,
					},
					"on_error": s.on_error,
					**({} if s.quiet_hours is True else {"quiet_hours": s.quiet_hours}),
				}
				for s in self.steps
			],
		}


def _topological_order(steps: tuple[Step, ...]) -> tuple[Step, ...]:
	by_id = {s.id: s for s in steps}
	placed: set[str] = set()
	order: list[Step] = []
	remaining = list(steps)
	while remaining:
		still = []
		for step in remaining:
			if all(p in placed or p not in by_id for p in step.predecessors):
				order.append(step)
				placed.add(step.id)
			else:
				still.append(step)
		if len(still) == len(remaining):  # a cycle: validation reports it; keep declaration order
			order.extend(still)
			break
		remaining = still
	return tuple(order)


def _branch_name(value: Any) -> str | None:
	if value is None or value == "":
		return None
	return str(value)


def extract_definition(document: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
	"""Split a file into (definition, template metadata).

	Accepts a bare definition (`{"version", "steps", ...}`) or a template export shaped like
	`shared/examples/flows/*.json` (`{"template_name", "trigger", "definition": {...}}`).
	"""
	if not isinstance(document, Mapping):
		raise ValueError("a flow file must hold a JSON object")
	if "definition" in document:
		meta = {k: v for k, v in document.items() if k != "definition"}
		return dict(document["definition"] or {}), meta
	return dict(document), {}
