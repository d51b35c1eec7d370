"""A real HTTP server on loopback that answers like the WhatsApp Cloud API.

For tests and benchmarks (here and in the Frappe integration tests): point a
``CloudAPIClient`` (or a WhatsApp Account's base URL) at ``FakeGraphAPI().base_url`` and
it sends real HTTP requests over a real socket. Standard library only.

    with FakeGraphAPI(access_token="token") as graph:
        client = CloudAPIClient("106540352242922", "token", base_url=graph.base_url)
        graph.fail_next(1, status=400, code=130429)  # first call throttled
        client.send(text_message("+16505551234", "hi"))
        assert graph.sent_messages[0]["text"]["body"] == "hi"

Serves: ``POST /{version}/{phone_number_id}/messages`` (sends and read receipts),
``POST /{version}/{phone_number_id}/media`` (multipart upload), ``GET|DELETE
/{version}/{media_id}``, ``GET /{version}/{waba_id}/message_templates`` (with paging) and
media downloads. Everything received is recorded in ``requests``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

_VERSIONED = re.compile(r"^/v\d+(\.\d+)?/(.+)$")
_MEDIA_DOWNLOAD_PREFIX = "/_media/"


@dataclass(frozen=True)
class RecordedRequest:
	"""One request the fake received."""

	method: str
	path: str  # without the query string
	query: dict[str, list[str]]
	headers: dict[str, str]
	body: bytes = field(repr=False)
	json: Any = None  # the parsed JSON body, when there was one
	form: dict[str, Any] | None = None  # multipart fields: str, or (filename, bytes, content type)

	@property
	def authorization(self) -> str | None:
		"""The Authorization header as received."""
		return self.headers.get("authorization")


@dataclass(frozen=True)
class Upload:
	"""A media upload the fake accepted: what Meta would store under ``media_id``."""

	media_id: str
	phone_number_id: str
	file_name: str
	data: bytes = field(repr=False)
	mime_type: str  # the multipart part's Content-Type
	type: str  # the form's ``type`` field (Meta requires it: the media's MIME type)


@dataclass
class _Action:
	"""What to do with one upcoming request instead of (or before) answering normally."""

	delay: float = 0.0
	status: int | None = None
	body: bytes | None = None
	content_type: str = "application/json"
	headers: dict[str, str] = field(default_factory=dict)
	disconnect: bool = False
	path_contains: str | None = None


def meta_error_body(
	code: int,
	message: str,
	*,
	error_type: str = "OAuthException",
	details: str | None = None,
	error_subcode: int | None = None,
	title: str | None = None,
) -> dict[str, Any]:
	"""Return an error body shaped like the Graph API's."""
	error: dict[str, Any] = {"message": message, "type": error_type, "code": code}
	if error_subcode is not None:
		error["error_subcode"] = error_subcode
	if details is not None:
		error["error_data"] = {"messaging_product": "whatsapp", "details": details}
	if title is not None:
		error["error_user_title"] = title
	error["fbtrace_id"] = "AFakeTrace" + hashlib.sha1(message.encode()).hexdigest()[:12]
	return {"error": error}


# Realistic default messages for the codes tests program most often.
_DEFAULT_MESSAGES = {
	4: "(#4) Application request limit reached",
	80007: "(#80007) Rate limit issues",
	130429: "(#130429) Rate limit hit",
	131000: "(#131000) Something went wrong",
	131026: "(#131026) Message undeliverable",
	131047: "(#131047) Re-engagement message",
	131056: "(#131056) (Business Account, Consumer Account) pair rate limit hit",
	132001: "(#132001) Template name does not exist in the translation",
	100: "(#100) Invalid parameter",
	190: "Error validating access token: Session has expired",
}


class FakeGraphAPI:
	"""A loopback Graph API imitation; use as a context manager or with start()/stop()."""

	def __init__(
		self,
		*,
		access_token: str | None = None,
		host: str = "127.0.0.1",
		port: int = 0,
		paging_token_in_url: bool = False,
		on_request: Callable[[RecordedRequest], None] | None = None,
	) -> None:
		# When set, every request must carry ``Authorization: Bearer <access_token>``.
		self.require_token = access_token
		# Graph echoes access_token into paging.next URLs in some set-ups; imitate that.
		self.paging_token_in_url = paging_token_in_url
		self._address = (host, port)
		# Told about every request as it arrives (the `flow-automation fake-graph` command prints them).
		self.on_request = on_request
		self._lock = threading.Lock()
		self._requests: list[RecordedRequest] = []
		self._actions: deque[_Action] = deque()
		self._media: dict[str, tuple[bytes, str]] = {}
		self._uploads: list[Upload] = []
		self._templates: dict[str, list[dict[str, Any]]] = {}
		self._counter = itertools.count(1)
		self._server: ThreadingHTTPServer | None = None
		self._thread: threading.Thread | None = None

	# --- lifecycle ----------------------------------------------------------------------------
	def start(self) -> FakeGraphAPI:
		"""Start serving on a free loopback port (idempotent)."""
		if self._server is None:
			server = ThreadingHTTPServer(self._address, _make_handler(self))
			server.daemon_threads = True
			self._server = server
			self._thread = threading.Thread(
				target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="FakeGraphAPI", daemon=True
			)
			self._thread.start()
		return self

	def stop(self) -> None:
		"""Stop serving and free the port."""
		if self._server is not None:
			self._server.shutdown()
			self._server.server_close()
			if self._thread is not None:
				self._thread.join(timeout=5)
			self._server = None
			self._thread = None

	def __enter__(self) -> FakeGraphAPI:
		return self.start()

	def __exit__(self, *exc_info: object) -> None:
		self.stop()

	@property
	def base_url(self) -> str:
		"""``http://127.0.0.1:<port>``: the client's ``base_url``."""
		if self._server is None:
			raise RuntimeError("FakeGraphAPI is not running; call start() first")
		host, port = self._server.server_address[:2]
		return f"http://{host}:{port}"

	# --- programming ---------------------------------------------------------------------
	def fail_next(
		self,
		n: int = 1,
		*,
		status: int = 400,
		code: int | None = 130429,
		message: str | None = None,
		details: str | None = None,
		error_type: str = "OAuthException",
		error_subcode: int | None = None,
		title: str | None = None,
		retry_after: str | float | None = None,
		body: dict[str, Any] | str | bytes | None = None,
		delay: float = 0.0,
		path_contains: str | None = None,
	) -> None:
		"""Answer the next ``n`` requests with an error: Meta's body for ``code``, or ``body`` as given.

		``code=None`` without ``body`` answers a plain-text body, like a proxy in front of
		Graph would. ``path_contains`` limits the failure to matching paths.
		"""
		content_type = "application/json"
		if body is None and code is not None:
			raw = json.dumps(
				meta_error_body(
					code,
					message or _DEFAULT_MESSAGES.get(code, f"(#{code}) Fake error"),
					error_type=error_type,
					details=details,
					error_subcode=error_subcode,
					title=title,
				)
			).encode()
		elif body is None:
			raw, content_type = f"HTTP {status} from the fake proxy".encode(), "text/plain"
		elif isinstance(body, dict):
			raw = json.dumps(body).encode()
		else:
			raw = body.encode() if isinstance(body, str) else body
			content_type = "text/plain"
		headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
		with self._lock:
			for _ in range(n):
				self._actions.append(
					_Action(
						delay=delay,
						status=status,
						body=raw,
						content_type=content_type,
						headers=headers,
						path_contains=path_contains,
					)
				)

	def delay_next(self, n: int = 1, seconds: float = 0.5) -> None:
		"""Answer the next ``n`` requests normally, but only after ``seconds``."""
		with self._lock:
			for _ in range(n):
				self._actions.append(_Action(delay=seconds))

	def disconnect_next(self, n: int = 1) -> None:
		"""Close the connection on the next ``n`` requests without answering."""
		with self._lock:
			for _ in range(n):
				self._actions.append(_Action(disconnect=True))

	def add_media(self, data: bytes, mime_type: str = "image/jpeg", media_id: str | None = None) -> str:
		"""Store media the fake will describe and serve; return its id."""
		with self._lock:
			media_id = media_id or str(1000000000000000 + next(self._counter))
			self._media[media_id] = (data, mime_type)
		return media_id

	def add_templates(self, waba_id: str, templates: list[dict[str, Any]]) -> None:
		"""Add message templates that ``GET /{waba_id}/message_templates`` will list."""
		with self._lock:
			self._templates.setdefault(str(waba_id), []).extend(templates)

	def reset(self) -> None:
		"""Forget recorded requests and pending programmed answers (keeps media and templates)."""
		with self._lock:
			self._requests.clear()
			self._actions.clear()
			self._uploads.clear()

	# --- inspection ---------------------------------------------------------------------
	@property
	def requests(self) -> list[RecordedRequest]:
		"""A copy of every request received so far, oldest first."""
		with self._lock:
			return list(self._requests)

	@property
	def uploads(self) -> list[Upload]:
		"""Every media upload accepted so far (``POST /{phone_number_id}/media``), oldest first."""
		with self._lock:
			return list(self._uploads)

	@property
	def sent_messages(self) -> list[dict[str, Any]]:
		"""The JSON bodies of message sends (not read receipts), failed ones included."""
		return [
			r.json
			for r in self.requests
			if r.method == "POST"
			and r.path.endswith("/messages")
			and isinstance(r.json, dict)
			and r.json.get("status") != "read"
		]

	# --- request handling (called from server threads) -----------------------------------
	def _record(self, request: RecordedRequest) -> None:
		with self._lock:
			self._requests.append(request)
		if self.on_request is not None:
			self.on_request(request)

	def _take_action(self, path: str) -> _Action | None:
		with self._lock:
			for i, action in enumerate(self._actions):
				if action.path_contains is None or action.path_contains in path:
					del self._actions[i]
					return action
		return None

	def _next_wamid(self) -> str:
		return f"wamid.FAKE{next(self._counter):010d}{time.monotonic_ns() % 10**6:06d}"

	def _answer(self, request: RecordedRequest, base_url: str) -> tuple[int, dict[str, Any] | bytes, str]:
		"""Return (status, JSON body or bytes, content type) for a request that was not programmed."""
		path = request.path
		if path.startswith(_MEDIA_DOWNLOAD_PREFIX):
			media = self._media.get(path[len(_MEDIA_DOWNLOAD_PREFIX) :])
			if request.method != "GET" or media is None:
				return 404, b"Not Found", "text/plain"
			return 200, media[0], media[1]
		match = _VERSIONED.match(path)
		if not match:
			return 404, meta_error_body(100, "Unknown path components", error_subcode=33), "application/json"
		parts = match.group(2).strip("/").split("/")
		if request.method == "POST" and len(parts) == 2 and parts[1] == "messages":
			return self._answer_message(request)
		if request.method == "POST" and len(parts) == 2 and parts[1] == "media":
			return self._answer_upload(request, parts[0])
		if request.method == "GET" and len(parts) == 2 and parts[1] == "message_templates":
			return self._answer_templates(request, parts[0], base_url)
		if len(parts) == 1 and request.method in ("GET", "DELETE"):
			with self._lock:
				media = self._media.get(parts[0])
				if media is not None and request.method == "DELETE":
					del self._media[parts[0]]
			if media is None:
				message = f"Unsupported {request.method.lower()} request. Object with ID '{parts[0]}' does not exist"
				return 400, meta_error_body(100, message, error_subcode=33), "application/json"
			if request.method == "DELETE":
				return 200, {"success": True}, "application/json"
			data, mime_type = media
			return (
				200,
				{
					"messaging_product": "whatsapp",
					"url": f"{base_url}{_MEDIA_DOWNLOAD_PREFIX}{parts[0]}",
					"mime_type": mime_type,
					"sha256": hashlib.sha256(data).hexdigest(),
					"file_size": len(data),
					"id": parts[0],
				},
				"application/json",
			)
		message = f"Unsupported {request.method.lower()} request"
		return 400, meta_error_body(100, message, error_subcode=33), "application/json"

	def _answer_message(self, request: RecordedRequest) -> tuple[int, dict[str, Any], str]:
		body = request.json
		if not isinstance(body, dict) or body.get("messaging_product") != "whatsapp":
			return (
				400,
				meta_error_body(100, "(#100) The parameter messaging_product is required."),
				"application/json",
			)
		if body.get("status") == "read":
			if not body.get("message_id"):
				return (
					400,
					meta_error_body(100, "(#100) The parameter message_id is required."),
					"application/json",
				)
			return 200, {"success": True}, "application/json"
		to = body.get("to")
		kind = body.get("type", "text")
		if not isinstance(to, str) or not to:
			return 400, meta_error_body(100, "(#100) The parameter to is required."), "application/json"
		if kind not in body:
			return (
				400,
				meta_error_body(
					131008, "(#131008) Required parameter is missing", details=f"{kind} is required"
				),
				"application/json",
			)
		sent: dict[str, Any] = {"id": self._next_wamid()}
		if kind == "template":
			sent["message_status"] = "accepted"
		return (
			200,
			{
				"messaging_product": "whatsapp",
				"contacts": [{"input": to, "wa_id": re.sub(r"\D", "", to)}],
				"messages": [sent],
			},
			"application/json",
		)

	def _answer_upload(
		self, request: RecordedRequest, phone_number_id: str
	) -> tuple[int, dict[str, Any], str]:
		form = request.form or {}
		upload = form.get("file")
		if form.get("messaging_product") != "whatsapp":
			return (
				400,
				meta_error_body(100, "(#100) The parameter messaging_product is required."),
				"application/json",
			)
		if not isinstance(upload, tuple):
			return 400, meta_error_body(100, "(#100) The parameter file is required."), "application/json"
		if not form.get("type"):
			return 400, meta_error_body(100, "(#100) The parameter type is required."), "application/json"
		file_name, data, content_type = upload
		media_id = self.add_media(data, str(form["type"]))
		with self._lock:
			self._uploads.append(
				Upload(media_id, phone_number_id, file_name, data, content_type, str(form["type"]))
			)
		return 200, {"id": media_id}, "application/json"

	def _answer_templates(
		self, request: RecordedRequest, waba_id: str, base_url: str
	) -> tuple[int, dict[str, Any], str]:
		with self._lock:
			templates = list(self._templates.get(waba_id, []))
		limit = int((request.query.get("limit") or ["25"])[0])
		start = int((request.query.get("after") or ["0"])[0])
		page = templates[start : start + limit]
		body: dict[str, Any] = {"data": page}
		if page:
			body["paging"] = {"cursors": {"before": str(start), "after": str(start + len(page))}}
			if start + len(page) < len(templates):
				query: dict[str, str] = {"limit": str(limit), "after": str(start + len(page))}
				if request.query.get("fields"):
					query["fields"] = request.query["fields"][0]
				if self.paging_token_in_url and request.authorization:
					query["access_token"] = request.authorization.removeprefix("Bearer ")
				body["paging"]["next"] = f"{base_url}{request.path}?{urlencode(query)}"
		return 200, body, "application/json"


def _parse_multipart(content_type: str, body: bytes) -> dict[str, Any]:
	message = BytesParser(policy=HTTP).parsebytes(
		b"MIME-Version: 1.0\r\nContent-Type: " + content_type.encode("latin-1") + b"\r\n\r\n" + body
	)
	form: dict[str, Any] = {}
	if not message.is_multipart():
		return form
	for part in message.iter_parts():
		name = part.get_param("name", header="content-disposition")
		payload = part.get_payload(decode=True) or b""
		filename = part.get_filename()
		if not isinstance(name, str):
			continue
		if filename is not None:
			form[name] = (filename, payload, part.get_content_type())
		else:
			form[name] = payload.decode("utf-8", errors="replace")
	return form


def _make_handler(fake: FakeGraphAPI) -> type[BaseHTTPRequestHandler]:
	class Handler(BaseHTTPRequestHandler):
		protocol_version = "HTTP/1.1"  # keep-alive, as the real Graph API

		def setup(self) -> None:
			super().setup()
			# Headers and body go out in two writes; without this, Nagle's algorithm and
			# delayed ACKs add ~40 ms to every answer.
			self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

		def log_message(self, format: str, *args: Any) -> None:
			pass  # tests read fake.requests instead

		def do_GET(self) -> None:
			self._handle()

		def do_POST(self) -> None:
			self._handle()

		def do_DELETE(self) -> None:
			self._handle()

		def _handle(self) -> None:
			try:
				self._serve()
			except (BrokenPipeError, ConnectionResetError):
				# The client gave up (timeout test, size cap): nothing left to answer.
				self.close_connection = True

		def _serve(self) -> None:
			length = int(self.headers.get("Content-Length") or 0)
			raw = self.rfile.read(length) if length else b""
			split = urlsplit(self.path)
			content_type = self.headers.get("Content-Type") or ""
			parsed_json: Any = None
			form: dict[str, Any] | None = None
			if content_type.startswith("application/json") and raw:
				try:
					parsed_json = json.loads(raw)
				except ValueError:
					parsed_json = None
			elif content_type.startswith("multipart/form-data"):
				form = _parse_multipart(content_type, raw)
			request = RecordedRequest(
				method=self.command,
				path=split.path,
				query=parse_qs(split.query),
				headers={key.lower(): value for key, value in self.headers.items()},
				body=raw,
				json=parsed_json,
				form=form,
			)
			fake._record(request)
			base_url = f"http://{self.server.server_address[0]}:{self.server.server_address[1]}"

			if fake.require_token is not None and request.authorization != f"Bearer {fake.require_token}":
				error = meta_error_body(
					190, "Invalid OAuth access token - Cannot parse access token", error_subcode=None
				)
				self._send(401, json.dumps(error).encode(), "application/json", {"WWW-Authenticate": "OAuth"})
				return
			action = fake._take_action(request.path)
			if action is not None:
				if action.delay:
					time.sleep(action.delay)
				if action.disconnect:
					self.close_connection = True
					return
				if action.status is not None:
					self._send(action.status, action.body or b"", action.content_type, action.headers)
					return
			status, body, body_type = fake._answer(request, base_url)
			payload = json.dumps(body).encode() if isinstance(body, dict) else body
			self._send(status, payload, body_type, {})

		def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str]) -> None:
			self.send_response(status)
			self.send_header("Content-Type", content_type)
			self.send_header("Content-Length", str(len(body)))
			for key, value in headers.items():
				self.send_header(key, value)
			self.end_headers()
			if self.command != "HEAD":
				self.wfile.write(body)

	return Handler
