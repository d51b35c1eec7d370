"""Step handlers: the side effects of the host-executed step kinds, one module per family.

This package is their one loader: importing it registers every handler (each module
registers its own with `base.handles`), and `handler_for` finds them.
"""

from flow_automation.steps import data, documents, fanout, flows, http, notify, pdf, whatsapp
from flow_automation.steps.base import HANDLERS, Handler, StepCall, StepHost


def handler_for(kind: str) -> Handler | None:
	return HANDLERS.get(kind)


__all__ = ["Handler", "StepCall", "StepHost", "handler_for"]
