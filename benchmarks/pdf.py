"""How long a generate_pdf step takes: a ToDo printed in its Standard print format, on a real site.

Run with the bench's Python (the script re-execs itself with it):

	$FRAPPE_BENCH/env/bin/python benchmarks/pdf.py [runs]

$FRAPPE_BENCH and $FRAPPE_TEST_SITE pick the bench and the site (default test_site). Needs
Debian's wkhtmltopdf (`apt-get install -y wkhtmltopdf`; the test command installs it).

Frappe v15 makes PDFs with wkhtmltopdf, which loads the print view's stylesheet from the site's
URL. Unless the site config sets `host_name`, the script serves the site with `frappe serve`
on a free loopback port and points `host_name` at it for this process, as a deployment's web
server would be.

For each of `runs` runs (default 10, after one warm-up) of a one-step flow (`generate_pdf`
with an empty payload: the trigger ToDo, its default print format, Standard) it measures:

	pdf_ms     the whole run: start_run(advance="now") until it is Completed (the step renders
	           the print view, wkhtmltopdf makes the PDF, the File is written), wall clock
	print_ms   frappe.get_print(..., as_pdf=True) alone on the same ToDo: Frappe's own cost,
	           so pdf_ms - print_ms is what the flow adds (run, File, logs). Read-only, as the
	           step calls it: the print view's Access Log is queued (deferred insert), not
	           committed

Prints each run, then the medians; asserts nothing. The last line is

	pdf_ms=<median> print_ms=<median> p95_ms=<n> bytes=<n> runs=<n>

Everything happens in one transaction that is rolled back: the ToDo, the template, the runs and
the Files go (Frappe deletes a rolled-back File's content from disk), and so do the Access Logs
the prints queued.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _site

_site.ensure_bench_python()


def p95(values: list[float]) -> float:
	ordered = sorted(values)
	return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
	runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
	_site.on_signals()
	frappe = _site.connect()
	from flow_automation import runtime
	from flow_automation.tests.browser import DeskServer

	server = None
	if not frappe.conf.get("host_name"):
		server = DeskServer(_site.SITE, os.path.join(tempfile.gettempdir(), "flow_pdf_benchmark_serve.log"))
		server.start()
		frappe.conf.host_name = server.url
	access_log_queue = "insert_queue_for_Access Log"  # frappe.deferred_insert's queue
	queued_before = frappe.cache.llen(access_log_queue)
	private_files = frappe.get_site_path("private", "files")
	files_before = set(os.listdir(private_files)) if os.path.isdir(private_files) else set()
	try:
		todo = frappe.get_doc(
			{"doctype": "ToDo", "description": "PDF benchmark: " + "lorem ipsum " * 40}
		).insert()
		template = _site.make_template(
			_site.unique_prefix("pdf"),
			[{"id": "pdf", "kind": "generate_pdf", "payload": {}}],
			trigger={"type": "Manual", "doctype": "ToDo"},
		).name

		def one_run() -> tuple[float, int]:
			started = time.perf_counter()
			run = runtime.start_run(
				template, reference_doctype="ToDo", reference_name=todo.name, advance="now"
			)
			elapsed = (time.perf_counter() - started) * 1000
			status = frappe.db.get_value("Flow Run", run, "status")
			assert status == "Completed", frappe.db.get_value("Flow Run", run, "error")
			return elapsed, frappe.db.count("File", {"attached_to_name": todo.name})

		def one_print() -> tuple[float, int]:
			# read-only, as the step does it: the print view's Access Log is queued, not committed
			frappe.flags.read_only = True
			try:
				started = time.perf_counter()
				pdf = frappe.get_print("ToDo", todo.name, doc=todo, as_pdf=True)
				return (time.perf_counter() - started) * 1000, len(pdf)
			finally:
				frappe.flags.read_only = False

		one_run()  # warm-up: metadata, print settings, wkhtmltopdf's version check
		one_print()
		pdf_times, print_times, size = [], [], 0
		for i in range(runs):
			elapsed, files = one_run()
			printed, size = one_print()
			pdf_times.append(elapsed)
			print_times.append(printed)
			print(f"run {i + 1}: pdf_ms={elapsed:.0f} print_ms={printed:.0f} files={files}")
		print(
			f"pdf_ms={statistics.median(pdf_times):.0f} print_ms={statistics.median(print_times):.0f} "
			f"p95_ms={p95(pdf_times):.0f} bytes={size} runs={runs}"
		)
	finally:
		frappe.db.rollback()
		while frappe.cache.llen(access_log_queue) > queued_before:
			frappe.cache.rpop(access_log_queue)
		if server:
			server.stop()
		left = (set(os.listdir(private_files)) if os.path.isdir(private_files) else set()) - files_before
		if left:
			print(f"files left on disk: {sorted(left)}", file=sys.stderr)
		frappe.destroy()


if __name__ == "__main__":
	main()
