"""generate_pdf on a real site, and the PDF used by later steps: an email attachment (Email
Queue) and a WhatsApp document uploaded to the loopback Graph API.

PDFs are made by Frappe's own path (`frappe.get_print(..., as_pdf=True)`, wkhtmltopdf). The
print view links its stylesheet by the site's URL, which wkhtmltopdf loads: the class serves
the site with `frappe serve` on loopback and points `host_name` at it, as a deployment's
web server would be.
"""

from __future__ import annotations

import email
import io
import json
import os
import shutil
import unicodedata
import unittest

import frappe
from frappe.email.doctype.email_queue.email_queue import SendMailContext
from pypdf import PdfReader

from flow_automation import runtime
from flow_automation.portable import template_values_from_export
from flow_automation.tests.browser import DeskServer
from flow_automation.tests.utils import make_template, make_todo, site_config, state
from flow_automation.tests.whatsapp_utils import CONTACT, WhatsAppTestCase, open_window

READER = "fa-pdf-reader@example.com"
# where Frappe queues the print view's Access Log when printing read-only (frappe.deferred_insert)
ACCESS_LOG_QUEUE = "insert_queue_for_Access Log"
FLOWS = os.path.join(os.path.dirname(__file__), "flows")


def pdf_text(content: bytes) -> str:
	"""The PDF's text, words separated by single spaces (ligatures such as "ﬀ" spelt out)."""
	text = " ".join(page.extract_text() or "" for page in PdfReader(io.BytesIO(content)).pages)
	return " ".join(unicodedata.normalize("NFKC", text).split())


def one_step(payload: dict, **template) -> str:
	return make_template(
		[{"id": "pdf", "kind": "generate_pdf", "payload": payload}],
		trigger={"type": "Manual", "doctype": "ToDo"},
		**template,
	).name


def run_on(template: str, todo: str) -> str:
	return runtime.start_run(template, reference_doctype="ToDo", reference_name=todo, advance="now")


def step(run: str, step_id: str = "pdf") -> dict:
	return state(run)[step_id]


def make_reader() -> str:
	"""A desk user with no rights on other people's ToDos (ToDo's has_permission: own or assigned)."""
	if not frappe.db.exists("User", READER):
		frappe.get_doc(
			{
				"doctype": "User",
				"email": READER,
				"first_name": "PDF Reader",
				"send_welcome_email": 0,
				"user_type": "System User",
				"roles": [{"role": "Flow User"}],
			}
		).insert(ignore_permissions=True)
		frappe.db.commit()
	return READER


class PDFTestCase(WhatsAppTestCase):
	@classmethod
	def setUpClass(cls):
		super().setUpClass()
		if not shutil.which("wkhtmltopdf"):
			raise unittest.SkipTest("wkhtmltopdf is not installed (apt-get install -y wkhtmltopdf)")
		cls.server = DeskServer(frappe.local.site)
		cls.server.start()
		cls.addClassCleanup(cls.server.stop)
		config = site_config(host_name=cls.server.url)
		config.__enter__()
		cls.addClassCleanup(config.__exit__, None, None, None)

	def setUp(self):
		super().setUp()
		self._files_before = set(frappe.get_all("File", pluck="name"))
		self._queued_access_logs = frappe.cache.llen(ACCESS_LOG_QUEUE)

	def tearDown(self):
		# the Access Logs of this test's prints (queued for Frappe's scheduler) go with its rows
		while frappe.cache.llen(ACCESS_LOG_QUEUE) > self._queued_access_logs:
			frappe.cache.rpop(ACCESS_LOG_QUEUE)
		new = frappe.get_all(
			"File", filters={"name": ("not in", list(self._files_before) or [""])}, fields=["file_url"]
		)
		super().tearDown()
		for row in new:  # rows are gone; their files on disk too (unless another row shares one)
			url = row.file_url or ""
			if url.startswith(("/private/files/", "/files/")) and not frappe.db.exists(
				"File", {"file_url": url}
			):
				path = (
					frappe.get_site_path(url.lstrip("/"))
					if url.startswith("/private")
					else frappe.get_site_path("public", url.lstrip("/"))
				)
				if os.path.exists(path):
					os.remove(path)

	def print_format(self, html: str, doc_type: str = "ToDo", **fields) -> str:
		name = f"Flow PDF Test {frappe.generate_hash(length=6)}"
		frappe.get_doc(
			{
				"doctype": "Print Format",
				"name": name,
				"doc_type": doc_type,
				"module": "Flow Automation",
				"custom_format": 1,
				"print_format_type": "Jinja",
				"standard": "No",
				"html": html,
				**fields,
			}
		).insert(ignore_permissions=True)
		return name


class TestGeneratePDF(PDFTestCase):
	def test_an_empty_payload_prints_the_trigger_document_as_a_private_file(self):
		todo = make_todo("Quarterly brief for the board")
		run = run_on(one_step({}), todo.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", step(run).get("error"))
		output = step(run)["output"]
		file = frappe.get_doc("File", output["name"])
		self.assertEqual(
			(file.attached_to_doctype, file.attached_to_name, file.is_private), ("ToDo", todo.name, 1)
		)
		self.assertEqual((output["file_url"], output["file_name"]), (file.file_url, file.file_name))
		self.assertTrue(file.file_url.startswith("/private/files/"))
		self.assertTrue(file.file_name.startswith(todo.name) and file.file_name.endswith(".pdf"))
		self.assertEqual(output["print_format"], "Standard")
		content = file.get_content()
		self.assertTrue(content.startswith(b"%PDF"))
		self.assertEqual(output["file_size"], len(content))
		self.assertIn("Quarterly brief for the board", pdf_text(content))

	def test_a_named_print_format_of_a_named_document(self):
		fmt = self.print_format("<h1>FLOWPDF {{ doc.description }}</h1>")
		todo = make_todo("Invoice run")
		other = make_todo("the trigger document")
		template = one_step(
			{
				"target": "document",
				"doctype": "ToDo",
				"name": "{{ variables.todo }}",
				"print_format": fmt,
				"file_name": "Brief {{ variables.todo }}",
			}
		)
		run = runtime.start_run(
			template,
			reference_doctype="ToDo",
			reference_name=other.name,
			variables={"todo": todo.name},
			advance="now",
		)
		output = step(run)["output"]
		self.assertEqual(output["print_format"], fmt)
		self.assertEqual(output["attached_to_name"], todo.name)
		self.assertTrue(output["file_name"].startswith(f"Brief {todo.name}"), output["file_name"])
		self.assertIn("FLOWPDF Invoice run", pdf_text(frappe.get_doc("File", output["name"]).get_content()))

	def test_the_doctypes_default_print_format_is_used(self):
		fmt = self.print_format("<p>DEFAULTFORMAT {{ doc.name }}</p>")
		frappe.make_property_setter(
			{
				"doctype": "ToDo",
				"doctype_or_field": "DocType",
				"property": "default_print_format",
				"value": fmt,
			}
		)
		self.addCleanup(frappe.clear_cache, doctype="ToDo")
		self.addCleanup(
			frappe.db.delete, "Property Setter", {"doc_type": "ToDo", "property": "default_print_format"}
		)
		todo = make_todo("defaults")
		run = run_on(one_step({}), todo.name)
		output = step(run)["output"]
		self.assertEqual(output["print_format"], fmt)
		self.assertIn(
			f"DEFAULTFORMAT {todo.name}", pdf_text(frappe.get_doc("File", output["name"]).get_content())
		)

	def test_a_missing_document_is_a_clear_error_and_no_file(self):
		todo = make_todo("trigger")
		template = one_step({"target": "document", "doctype": "ToDo", "name": "no-such-todo"})
		run = run_on(template, todo.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertEqual(step(run)["error"], "name: ToDo 'no-such-todo' does not exist")
		self.assertEqual(frappe.db.count("File", {"attached_to_doctype": "ToDo"}), 0)

	def test_a_missing_or_wrong_print_format_is_a_clear_error(self):
		todo = make_todo("formats")
		run = run_on(one_step({"print_format": "No Such Format"}), todo.name)
		self.assertEqual(step(run)["error"], "print_format: there is no Print Format 'No Such Format'")
		note_format = self.print_format("<p>note</p>", doc_type="Note")
		run = run_on(one_step({"print_format": note_format}), todo.name)
		self.assertEqual(
			step(run)["error"], f"print_format: Print Format '{note_format}' is for Note, not ToDo"
		)
		disabled = self.print_format("<p>off</p>", disabled=1)
		run = run_on(one_step({"print_format": disabled}), todo.name)
		self.assertEqual(step(run)["error"], f"print_format: Print Format '{disabled}' is disabled")
		run = run_on(one_step({"letterhead": "No Such Letter Head"}), todo.name)
		self.assertEqual(
			step(run)["error"], "letterhead: there is no enabled Letter Head 'No Such Letter Head'"
		)
		self.assertEqual(frappe.db.count("File", {"attached_to_name": todo.name}), 0)

	def test_a_broken_print_format_names_the_field(self):
		fmt = self.print_format("<p>{{ doc.description.no_such_method() }}</p>")  # fails rendering
		todo = make_todo("broken")
		run = run_on(one_step({"print_format": fmt}), todo.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertTrue(
			step(run)["error"].startswith("print_format: Error in print format"), step(run)["error"]
		)

	def test_the_run_as_user_needs_permission_on_the_document(self):
		reader = make_reader()
		todo = make_todo("confidential", allocated_to="Administrator")
		template = one_step({}, options={"run_as": reader})
		run = run_on(template, todo.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		self.assertEqual(
			step(run)["error"],
			f"target: {reader} may not print ToDo '{todo.name}' (no read or print permission)",
		)
		self.assertEqual(frappe.db.count("File", {"attached_to_name": todo.name}), 0)
		# the same user's own ToDo prints
		own = make_todo("mine", allocated_to=reader)
		run = run_on(template, own.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", step(run).get("error"))
		self.assertEqual(frappe.db.get_value("File", step(run)["output"]["name"], "owner"), reader)

	def test_printing_commits_nothing_even_where_frappe_would_commit_its_access_log(self):
		# Outside tests Frappe's print view commits the Access Log it writes; inside a step that
		# would commit the run half-way. Run as in production and roll back: nothing may stay.
		todo = make_todo("atomic")
		template = one_step({})
		queued = frappe.cache.llen(ACCESS_LOG_QUEUE)
		frappe.flags.in_test = False
		try:
			run = run_on(template, todo.name)
			status = frappe.db.get_value("Flow Run", run, "status")
		finally:
			frappe.flags.in_test = True
		self.assertEqual(status, "Completed", step(run).get("error"))
		self.assertEqual(frappe.cache.llen(ACCESS_LOG_QUEUE), queued + 1)  # the print is still logged
		frappe.db.rollback()
		self.assertFalse(frappe.db.exists("Flow Run", run))
		self.assertFalse(frappe.db.exists("ToDo", todo.name))

	def test_a_dry_run_records_what_it_would_print_and_leaves_no_file(self):
		todo = make_todo("dry")
		files = frappe.db.count("File")
		result = runtime.simulate_template(one_step({}), reference_doctype="ToDo", reference_name=todo.name)
		self.assertEqual(result.status, "Completed")
		[call] = result.calls
		self.assertEqual(
			{k: call[k] for k in ("action", "doctype", "name", "print_format", "file_name")},
			{
				"action": "pdf",
				"doctype": "ToDo",
				"name": todo.name,
				"print_format": "Standard",
				"file_name": f"{todo.name}.pdf",
			},
		)
		self.assertEqual(frappe.db.count("File"), files)
		self.assertFalse(os.path.exists(frappe.get_site_path("private", "files", f"{todo.name}.pdf")))


class TestPDFInLaterSteps(PDFTestCase):
	def pdf_then(self, later: dict, **template) -> str:
		return make_template(
			[
				{"id": "pdf", "kind": "generate_pdf", "payload": {}},
				{"id": "later", "depends_on": ["pdf"], **later},
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
			**template,
		).name

	def test_an_email_carries_the_pdf_as_an_attachment(self):
		todo = make_todo("mail me")
		template = self.pdf_then(
			{
				"kind": "notify",
				"payload": {
					"to": ["someone@example.com"],
					"subject": "Your brief {{ doc.name }}",
					"attachments": ["{{ steps.pdf.output.file_url }}"],
				},
			}
		)
		run = run_on(template, todo.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", state(run))
		file = frappe.get_doc("File", step(run)["output"]["name"])
		self.assertEqual(step(run, "later")["output"]["attachments"][0]["name"], file.name)
		[queued] = frappe.get_all(
			"Email Queue", filters={"reference_doctype": "ToDo", "reference_name": todo.name}, pluck="name"
		)
		queue = frappe.get_doc("Email Queue", queued)
		self.assertEqual(json.loads(queue.attachments), [{"fid": file.name}])
		# what Email Queue sends: the message with the PDF's bytes, under the File's name
		message = email.message_from_bytes(SendMailContext(queue).build_message("someone@example.com"))
		parts = [p for p in message.walk() if p.get_filename()]
		self.assertEqual([p.get_filename() for p in parts], [file.file_name])
		self.assertEqual(parts[0].get_payload(decode=True), file.get_content())

	def test_an_attachment_by_file_name_and_the_errors(self):
		todo = make_todo("attachments")
		other = make_todo("someone else's", allocated_to="Administrator")
		private = frappe.get_doc(
			{
				"doctype": "File",
				"file_name": "secret.pdf",
				"content": b"%PDF-1.4 secret",
				"is_private": 1,
				"attached_to_doctype": "ToDo",
				"attached_to_name": other.name,
			}
		).insert()
		mail = {"to": ["someone@example.com"], "subject": "s"}
		by_name = make_template(
			[{"id": "m", "kind": "notify", "payload": {**mail, "attachments": [private.name]}}],
			trigger={"type": "Manual", "doctype": "ToDo"},
		).name
		run = run_on(by_name, todo.name)
		self.assertEqual(state(run)["m"]["output"]["attachments"][0]["name"], private.name)
		missing = make_template(
			[{"id": "m", "kind": "notify", "payload": {**mail, "attachments": ["/private/files/nope.pdf"]}}],
			trigger={"type": "Manual", "doctype": "ToDo"},
		).name
		run = run_on(missing, todo.name)
		self.assertEqual(
			state(run)["m"]["error"], "attachments/0: there is no File '/private/files/nope.pdf'"
		)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Failed")
		# a user who may not read the File cannot mail it
		reader = make_reader()
		own = make_todo("mine", allocated_to=reader)
		guarded = make_template(
			[{"id": "m", "kind": "notify", "payload": {**mail, "attachments": [private.file_url]}}],
			trigger={"type": "Manual", "doctype": "ToDo"},
			options={"run_as": reader},
		).name
		run = run_on(guarded, own.name)
		self.assertEqual(
			state(run)["m"]["error"], f"attachments/0: {reader} may not read File '{private.file_url}'"
		)
		self.assertEqual(frappe.db.count("Email Queue", {"reference_name": ("in", [todo.name, own.name])}), 1)

	def test_a_dry_run_records_the_email_with_the_pdf_it_would_attach(self):
		todo = make_todo("dry mail")
		template = self.pdf_then(
			{
				"kind": "notify",
				"payload": {
					"to": ["someone@example.com"],
					"subject": "s",
					"attachments": ["{{ steps.pdf.output.file_url }}"],
				},
			}
		)
		result = runtime.simulate_template(template, reference_doctype="ToDo", reference_name=todo.name)
		self.assertEqual(result.status, "Completed")
		self.assertEqual([c["action"] for c in result.calls], ["pdf", "email"])
		self.assertEqual(
			result.calls[1]["attachments"],
			[
				{
					"name": None,
					"file_name": None,
					"file_url": f"/private/files/{todo.name}.pdf",
					"unresolved": True,
				}
			],
		)
		self.assertEqual(frappe.db.count("Email Queue", {"reference_name": todo.name}), 0)

	def test_whatsapp_sends_the_pdf_as_a_document_uploaded_to_meta(self):
		open_window()
		todo = make_todo("whatsapp me")
		template = self.pdf_then(
			{
				"kind": "send_whatsapp",
				"payload": {
					"to": CONTACT,
					"mode": "document",
					"file": "{{ steps.pdf.output.file_url }}",
					"caption": "Brief {{ doc.name }}",
				},
			}
		)
		run = run_on(template, todo.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", state(run))
		file = frappe.get_doc("File", step(run)["output"]["name"])
		[upload] = self.graph.uploads
		self.assertEqual(upload.data, file.get_content())
		self.assertEqual((upload.mime_type, upload.type), ("application/pdf", "application/pdf"))
		self.assertEqual(upload.file_name, file.file_name)
		self.assertEqual(upload.phone_number_id, self.account.phone_number_id)
		[message] = self.sent()
		self.assertEqual(
			message["document"],
			{"id": upload.media_id, "filename": file.file_name, "caption": f"Brief {todo.name}"},
		)

	def test_whatsapp_link_mode_still_sends_by_url_without_an_upload(self):
		open_window()
		todo = make_todo("link")
		template = make_template(
			[
				{
					"id": "send",
					"kind": "send_whatsapp",
					"payload": {
						"to": CONTACT,
						"mode": "document",
						"url": "https://example.com/brief.pdf",
						"filename": "brief.pdf",
					},
				}
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
		).name
		run = run_on(template, todo.name)
		self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", state(run))
		self.assertEqual(self.graph.uploads, [])
		self.assertEqual(
			self.sent()[0]["document"], {"link": "https://example.com/brief.pdf", "filename": "brief.pdf"}
		)

	def test_whatsapp_upload_errors(self):
		open_window()
		todo = make_todo("upload errors")
		template = make_template(
			[
				{
					"id": "send",
					"kind": "send_whatsapp",
					"payload": {"to": CONTACT, "mode": "document", "file": "/private/files/missing.pdf"},
				}
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
		).name
		run = run_on(template, todo.name)
		self.assertEqual(
			state(run)["send"]["error"], "file: no File '/private/files/missing.pdf' in this site"
		)
		self.assertEqual(self.graph.requests, [])
		# Meta refuses the upload: the step fails (retryable), nothing is sent
		file = frappe.get_doc(
			{"doctype": "File", "file_name": "brief.pdf", "content": b"%PDF-1.4 brief", "is_private": 1}
		).insert()
		self.graph.fail_next(
			1, status=400, code=131053, message="(#131053) Media upload error", path_contains="/media"
		)
		retried = make_template(
			[
				{
					"id": "send",
					"kind": "send_whatsapp",
					"payload": {"to": CONTACT, "mode": "document", "file": file.name},
					"retry": {"max_attempts": 2, "backoff_seconds": 60},
				}
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
		).name
		run = run_on(retried, todo.name)
		self.assertIn("file: upload to WhatsApp failed", state(run)["send"]["error"])
		self.assertEqual(state(run)["send"]["status"], "failed")  # Meta's refusal stands
		# a connection lost during the upload is retried (an upload made twice harms nothing)
		self.graph.disconnect_next(1)
		run = run_on(retried, todo.name)
		self.assertIn("file: upload to WhatsApp failed", state(run)["send"]["error"])
		self.assertEqual(state(run)["send"]["status"], "scheduled")
		self.assertEqual(self.sent(), [])
		# a File the run's user may not read is not uploaded
		reader = make_reader()
		other = make_todo("not the reader's", allocated_to="Administrator")
		frappe.db.set_value(
			"File", file.name, {"attached_to_doctype": "ToDo", "attached_to_name": other.name}
		)
		guarded = make_template(
			[
				{
					"id": "send",
					"kind": "send_whatsapp",
					"payload": {"to": CONTACT, "mode": "document", "file": file.file_url},
				}
			],
			trigger={"type": "Manual", "doctype": "ToDo"},
			options={"run_as": reader},
		).name
		uploads = len(self.graph.uploads)
		run = run_on(guarded, make_todo("mine", allocated_to=reader).name)
		self.assertEqual(state(run)["send"]["error"], f"file: {reader} may not read File '{file.file_url}'")
		self.assertEqual(len(self.graph.uploads), uploads)

	def test_a_dry_run_of_a_whatsapp_document_uploads_nothing(self):
		open_window()
		todo = make_todo("dry whatsapp")
		template = self.pdf_then(
			{
				"kind": "send_whatsapp",
				"payload": {"to": CONTACT, "mode": "document", "file": "{{ steps.pdf.output.file_url }}"},
			}
		)
		result = runtime.simulate_template(template, reference_doctype="ToDo", reference_name=todo.name)
		self.assertEqual(result.status, "Completed", [e.as_dict() for e in result.timeline])
		self.assertEqual([c["action"] for c in result.calls], ["pdf", "whatsapp"])
		self.assertEqual(
			result.calls[1]["upload"], {"file": f"/private/files/{todo.name}.pdf", "unresolved": True}
		)
		self.assertEqual(self.graph.requests, [])

	def test_the_example_flow_prints_mails_and_sends_on_whatsapp_and_sms(self):
		from flow_automation.tests.test_sms import gateway_settings

		with open(os.path.join(FLOWS, "todo_brief_pdf.json")) as f:
			values = template_values_from_export(json.load(f))
		values["template_name"] = f"{values['template_name']} {frappe.generate_hash(length=6)}"
		template = frappe.get_doc({"doctype": "Flow Template", **values}).insert()
		user = make_reader()
		frappe.db.set_value("User", user, "mobile_no", CONTACT)
		open_window()
		with gateway_settings() as gateway:
			todo = make_todo("the example", allocated_to=user)
			# the document event wrote a Queued run; its job would start it after commit
			[run] = frappe.get_all("Flow Run", filters={"template": template.name}, pluck="name")
			self.assertEqual(frappe.db.get_value("Flow Run", run, "reference_name"), todo.name)
			runtime.start_queued_run(run)
			self.assertEqual(frappe.db.get_value("Flow Run", run, "status"), "Completed", state(run))
			self.assertEqual(len(gateway.requests), 1)
		outputs = {k: v.get("output") for k, v in state(run).items()}
		file = outputs["pdf"]["name"]
		self.assertEqual(outputs["mail"]["attachments"][0]["name"], file)
		self.assertEqual(self.graph.uploads[0].data, frappe.get_doc("File", file).get_content())
		self.assertEqual(outputs["sms"]["sent"], [CONTACT])
