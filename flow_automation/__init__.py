__version__ = "0.1.0"


def dispatch_event(event, doc=None, variables=None, **kwargs):
	"""Start the flows listening for a named business event (see triggers.dispatch_event).

	For other apps' code: `flow_automation.dispatch_event("production_run.assigned", doc=run)`.
	"""
	from flow_automation.triggers import dispatch_event as _dispatch  # on use: importing the app stays cheap

	return _dispatch(event, doc=doc, variables=variables, **kwargs)
