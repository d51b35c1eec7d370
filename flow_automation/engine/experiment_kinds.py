"""The `split` step kind (A/B/n: weighted branches, stable per run). Registered into the
catalog on import.

A split sends each run down one of its branches, in proportion to their weights:

    {"id": "offer", "kind": "split",
     "payload": {"branches": [{"name": "a", "weight": 50}, {"name": "b", "weight": 30},
                              {"name": "control", "weight": 20}]}}

The branch is not drawn at random: the run's name and the step's id are hashed to a point
in [0, 100), and the point falls into one weight's slice of the cumulative weights. So a run
takes the same branch however often the step is retried or the run re-advanced, a dry run
of a given run name shows the branch the real run takes, and the choice (with its point) is
recorded in the step's output.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

from flow_automation.engine import catalog
from flow_automation.engine.definition import ERROR_BRANCH
from flow_automation.engine.outcome import Outcome

Problems = list[tuple[str, str]]

TOTAL_WEIGHT = 100
MAX_SPLIT_BRANCHES = 20
# Branch names a split cannot offer: its parent's failure branch.
RESERVED_SPLIT_BRANCHES = (ERROR_BRANCH,)

SPLIT_SCHEMA: dict[str, Any] = {
	"type": "object",
	"required": ["branches"],
	"properties": {
		"branches": {
			"type": "array",
			"minItems": 2,
			"maxItems": MAX_SPLIT_BRANCHES,
			"items": {
				"type": "object",
				"required": ["name", "weight"],
				"properties": {
					"name": {
						"type": "string",
						"minLength": 1,
						"description": "the branch's name (letters, digits, _)",
					},
					"weight": {
						"type": "integer",
						"minimum": 0,
						"maximum": TOTAL_WEIGHT,
						"description": "share of runs, in percent (the weights add up to 100)",
					},
				},
				"additionalProperties": False,
			},
			"description": "the variants, e.g. [{name: a, weight: 50}, {name: b, weight: 50}]",
		},
	},
	"additionalProperties": False,
}


def split_branches(payload: Mapping[str, Any]) -> tuple[str, ...]:
	"""The branch names a split offers, in payload order."""
	names: list[str] = []
	for entry in payload.get("branches") or ():
		name = entry.get("name") if isinstance(entry, Mapping) else None
		if isinstance(name, str) and name and name not in names:
			names.append(name)
	return tuple(names)


def check_split(payload: Mapping[str, Any]) -> Problems:
	"""What the schema cannot say: names that are identifiers, unique and not reserved, and
	weights that add up to 100."""
	branches = payload.get("branches")
	if not isinstance(branches, list):
		return []
	problems: Problems = []
	seen: dict[str, int] = {}
	total = 0
	weights_are_numbers = True
	for i, entry in enumerate(branches):
		if not isinstance(entry, Mapping):
			weights_are_numbers = False
			continue
		name = entry.get("name")
		if isinstance(name, str) and name:
			if not catalog.IDENTIFIER.match(name):
				problems.append(
					(
						f"/branches/{i}/name",
						f"{name!r} is not a valid branch name (letters, digits and _ only)",
					)
				)
			elif name in RESERVED_SPLIT_BRANCHES:
				problems.append(
					(f"/branches/{i}/name", f"{name!r} is reserved for the step's failure branch")
				)
			elif name in seen:
				problems.append(
					(
						f"/branches/{i}/name",
						f"branch {name!r} is listed twice (first as branch #{seen[name] + 1})",
					)
				)
			seen.setdefault(name, i)
		weight = entry.get("weight")
		if isinstance(weight, int | float) and not isinstance(weight, bool) and float(weight).is_integer():
			total += int(weight)
		else:
			weights_are_numbers = False
	if weights_are_numbers and branches and total != TOTAL_WEIGHT:
		problems.append(("/branches", f"the weights add up to {total}; they must add up to {TOTAL_WEIGHT}"))
	return problems


def split_point(run: str, step_id: str) -> float:
	"""Where a run falls for a split step: a point in [0, 100), the same every time."""
	digest = hashlib.sha256(f"{run}:{step_id}".encode()).digest()
	return int.from_bytes(digest[:8], "big") / 2**64 * TOTAL_WEIGHT


def choose_branch(branches: Sequence[Mapping[str, Any]], point: float) -> str:
	"""The branch whose slice of the cumulative weights holds `point`."""
	upper = 0.0
	chosen = None
	for entry in branches:
		weight = int(entry.get("weight") or 0)
		if weight <= 0:
			continue
		chosen = str(entry["name"])
		upper += weight
		if point < upper:
			return chosen
	if chosen is None:
		raise ValueError("no branch has a weight above 0")
	return chosen  # weights that (unvalidated) add up to less than the point: the last one


def _evaluate_split(payload: Mapping[str, Any], context: Mapping[str, Any]) -> Outcome:
	run = str((context.get("run") or {}).get("name") or "")
	step_id = str((context.get("step") or {}).get("id") or "")
	branches = list(payload.get("branches") or ())
	point = split_point(run, step_id)
	try:
		branch = choose_branch(branches, point)
	except ValueError as e:
		return Outcome.failed(str(e), retryable=False)
	weights = {str(b.get("name")): int(b.get("weight") or 0) for b in branches}
	return Outcome.done({"branch": branch, "point": round(point, 6), "weights": weights}, branch=branch)


catalog.register(
	catalog.StepKind(
		name="split",
		label="Split (A/B)",
		group="Logic",
		description=(
			"Send each run down one of several weighted branches (A/B/n tests). The branch follows "
			"from the run and the step, so it stays the same on retries, and is in the output."
		),
		payload_schema=SPLIT_SCHEMA,
		output="{branch, point, weights}",
		example={"branches": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]},
		branches=split_branches,
		payload_branches="one per entry in branches",
		branch_paths=("branches[].name",),
		check=check_split,
		evaluate=_evaluate_split,
		render_payload=False,
	)
)
