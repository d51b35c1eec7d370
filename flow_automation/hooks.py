app_name = "flow_automation"
app_title = "Flow Automation"
app_publisher = "flow_automation developers"
app_description = (
	"Durable, observable multi-step automation flows for Frappe, with WhatsApp as a first-class channel"
)
app_email = "dev@flow-automation.local"
app_license = "mit"

export_python_type_annotations = True

after_install = "flow_automation.install.after_install"
after_migrate = "flow_automation.install.after_migrate"

# Desk
app_include_js = ["/assets/flow_automation/js/run_flow.js"]

# Retention, managed where admins manage every other log (Log Settings)
default_log_clearing_doctypes = {
	"Flow Step Log": 30,
	"Flow Run": 90,
	"Flow Step Pending": 7,
	"WhatsApp Message": 180,
}

scheduler_events = {
	"cron": {
		"* * * * *": [
			"flow_automation.scheduler.every_minute",
			# inbound WhatsApp rows a lost job left unprocessed (the webhook's outbox)
			"flow_automation.whatsapp.routing.drain",
		],
	},
}

# Document Event triggers. The no-match path costs no SQL (cached per-doctype index).
doc_events = {
	"*": {
		"after_insert": "flow_automation.triggers.on_document_event",
		"on_update": "flow_automation.triggers.on_document_event",
		"on_submit": "flow_automation.triggers.on_document_event",
		"on_cancel": "flow_automation.triggers.on_document_event",
		"on_trash": "flow_automation.triggers.on_document_event",
		"on_change": "flow_automation.triggers.on_document_event",
	},
}

boot_session = "flow_automation.triggers.boot_session"

# Called with a `flow_automation.runtime.FinishedRun` whenever a run completes, fails or is
# cancelled (each in its own savepoint; a failing callback is logged). Other apps may add theirs.
flow_run_finished = [
	"flow_automation.failures.on_run_finished",
	"flow_automation.whatsapp.conversations.on_run_finished",
]

# A run refers to its document; that must not stop anyone from deleting the document.
ignore_links_on_delete = ["Flow Run", "Flow Step Log"]
