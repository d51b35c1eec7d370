"""HTTP client for the WhatsApp Cloud API (Meta Graph API).

Retries, in two layers that never overlap:

* urllib3 (``HTTPAdapter(max_retries=Retry(...))``) retries *connection* failures, which
  happen before a request is written and are therefore safe for every method, and read
  failures of idempotent GETs. It never retries on a status code and never re-sends a POST
  that may have reached Meta, which could deliver a message twice.
* This client's own loop retries responses Meta marks as temporary: HTTP 5xx, HTTP 429,
  and the throttling / server codes in ``errors.RETRYABLE_CODES`` (130429, 131056, 80007,
  4, 613, 1, 2, 131000, ...), with exponential backoff and jitter, honouring
  ``Retry-After``. Meta's own guidance is to retry these; a 5xx on a send is rare enough
  that the small risk of a duplicate is accepted (the caller's idempotency key and the
  wamid dedup on the webhook side catch the rest).

The access token is sent only as an ``Authorization: Bearer`` header, only to the Graph
host (and to Meta's media CDN for downloads), and never appears in ``repr``, exception
messages or URLs this client builds.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import ConnectTimeoutError, MaxRetryError
from urllib3.util.retry import Retry

from . import builders
from .errors import TransportError, WhatsAppError, error_from_response

DEFAULT_BASE_URL = "https://graph.facebook.com"
DEFAULT_API_VERSION = "v21.0"
DEFAULT_MAX_DOWNLOAD_BYTES = 16 * 1024 * 1024
USER_AGENT = "flow-automation-whatsapp/1"
# Hosts Meta serves media downloads from; the bearer token is sent to no other host
# (except the configured Graph base URL itself, which is how tests serve media).
MEDIA_HOST_SUFFIXES = (".fbsbx.com", ".facebook.com", ".fbcdn.net", ".whatsapp.net")


@dataclass(frozen=True)
class SendResult:
	"""Meta's answer to an accepted message: the wamid to match status callbacks with."""

	wamid: str
	wa_id: str | None
	message_status: str | None  # "accepted", "held_for_quality_assessment", or None
	raw: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class MediaInfo:
	"""Where and what a media object is; ``url`` is valid for about five minutes."""

	id: str
	url: str
	mime_type: str | None
	sha256: str | None
	file_size: int | None


def _parse_retry_after(value: str | None, now: float) -> float | None:
	if not value:
		return None
	value = value.strip()
	if value.isdigit():
		return float(value)
	try:
		moment = email.utils.parsedate_to_datetime(value)
	except (TypeError, ValueError):
		return None
	return max(0.0, moment.timestamp() - now)


class CloudAPIClient:
	"""Sends messages and handles media and templates for one WhatsApp phone number."""

	def __init__(
		self,
		phone_number_id: str,
		access_token: str,
		*,
		base_url: str = DEFAULT_BASE_URL,
		api_version: str = DEFAULT_API_VERSION,
		timeout: float | tuple[float, float] = (5, 30),
		max_attempts: int = 4,
		backoff_seconds: float = 1.0,
		max_backoff_seconds: float = 30.0,
		max_retry_after_seconds: float = 60.0,
		sleep: Callable[[float], None] = time.sleep,
		session: requests.Session | None = None,
		connect_retries: int = 2,
	) -> None:
		if not phone_number_id or not str(phone_number_id).strip():
			raise ValueError("phone_number_id is required")
		if not access_token:
			raise ValueError("access_token is required")
		if max_attempts < 1:
			raise ValueError("max_attempts must be at least 1")
		self.phone_number_id = str(phone_number_id).strip()
		self.__token = access_token
		self.base_url = base_url.rstrip("/")
		self.api_version = api_version.strip("/")
		self.timeout = timeout
		self.max_attempts = max_attempts
		self.backoff_seconds = backoff_seconds
		self.max_backoff_seconds = max_backoff_seconds
		# A server asking for a longer pause than this is not waited for inside a request;
		# the error (with ``retry_after``) goes to the caller, whose scheduler can wait.
		self.max_retry_after_seconds = max_retry_after_seconds
		self.sleep = sleep
		self._random = random.Random()
		self._owns_session = session is None
		self.session = session or requests.Session()
		retry = Retry(
			total=connect_retries + 1,
			connect=connect_retries,
			read=1,  # only for methods below; a POST is never re-sent after it was written
			status=0,
			other=0,
			redirect=0,
			allowed_methods=frozenset({"GET", "HEAD"}),
			backoff_factor=0.2,
			raise_on_status=False,
			respect_retry_after_header=False,
		)
		adapter = HTTPAdapter(max_retries=retry)
		self.session.mount("https://", adapter)
		self.session.mount("http://", adapter)
		self.session.headers["User-Agent"] = USER_AGENT
		host = urlsplit(self.base_url)
		self._graph_origin = (host.scheme, host.netloc)

	def __repr__(self) -> str:
		return (
			f"CloudAPIClient(phone_number_id={self.phone_number_id!r}, base_url={self.base_url!r}, "
			f"api_version={self.api_version!r}, access_token='***')"
		)

	def __enter__(self) -> CloudAPIClient:
		return self

	def __exit__(self, *exc_info: object) -> None:
		self.close()

	def close(self) -> None:
		"""Close the HTTP session if this client created it."""
		if self._owns_session:
			self.session.close()

	# --- plumbing ---------------------------------------------------------------------------
	def url(self, *parts: str) -> str:
		"""Return ``{base_url}/{api_version}/{parts...}``."""
		return "/".join([self.base_url, self.api_version, *(str(part).strip("/") for part in parts)])

	def _auth(self) -> dict[str, str]:
		return {"Authorization": f"Bearer {self.__token}"}

	def _redact(self, text: str) -> str:
		return text.replace(self.__token, "***") if self.__token else text

	def backoff_delay(self, attempt: int) -> float:
		"""Return the pause before retry number ``attempt`` (1-based): exponential with jitter."""
		ceiling = min(self.max_backoff_seconds, self.backoff_seconds * 2 ** (attempt - 1))
		# "Equal jitter": at least half the exponential step, so retries still spread out
		# when many workers hit the same rate limit at once.
		return ceiling / 2 + self._random.uniform(0, ceiling / 2)

	def _request_once(self, method: str, url: str, **kwargs: Any) -> requests.Response:
		try:
			return self.session.request(method, url, headers=self._auth(), timeout=self.timeout, **kwargs)
		except requests.ConnectionError as exc:
			# urllib3 already retried connection failures; anything else (a reset, a closed
			# keep-alive connection) may have happened after a POST was written.
			reason = exc.args[0].reason if exc.args and isinstance(exc.args[0], MaxRetryError) else None
			connect_failure = isinstance(exc, requests.ConnectTimeout) or isinstance(
				reason, ConnectTimeoutError
			)
			raise TransportError(
				self._redact(f"{method} {self._safe_url(url)} failed: {type(exc).__name__}: {exc}"),
				maybe_sent=method != "GET" and not connect_failure,
			) from None
		except requests.Timeout as exc:
			raise TransportError(
				self._redact(f"{method} {self._safe_url(url)} timed out: {exc}"),
				maybe_sent=method != "GET",
			) from None
		except requests.RequestException as exc:
			raise TransportError(
				self._redact(f"{method} {self._safe_url(url)} failed: {type(exc).__name__}: {exc}"),
				maybe_sent=method != "GET",
			) from None

	@staticmethod
	def _safe_url(url: str) -> str:
		# Graph paging URLs may carry access_token in the query string.
		parts = urlsplit(url)
		query = [
			(k, "***" if k == "access_token" else v)
			for k, v in parse_qsl(parts.query, keep_blank_values=True)
		]
		return urlunsplit(parts._replace(query=urlencode(query)))

	def _request(self, method: str, url: str, **kwargs: Any) -> dict[str, Any]:
		"""Send with the retry loop; return the JSON body of a 2xx answer or raise a typed error."""
		last_error: WhatsAppError | None = None
		for attempt in range(1, self.max_attempts + 1):
			response = self._request_once(method, url, **kwargs)
			if 200 <= response.status_code < 300:
				try:
					body = response.json()
				except ValueError:
					raise TransportError(
						f"{method} {self._safe_url(url)}: HTTP {response.status_code} with a body that is not JSON",
						maybe_sent=method != "GET",
						http_status=response.status_code,
					) from None
				return body if isinstance(body, dict) else {"data": body}
			retry_after = _parse_retry_after(response.headers.get("Retry-After"), time.time())
			last_error = error_from_response(response.status_code, response.content, retry_after=retry_after)
			last_error.message = self._redact(last_error.message)
			if not last_error.retryable or attempt == self.max_attempts:
				raise last_error
			if retry_after is not None:
				if retry_after > self.max_retry_after_seconds:
					raise last_error
				delay = retry_after
			else:
				delay = self.backoff_delay(attempt)
			self.sleep(delay)
		assert last_error is not None  # the loop returns or raises
		raise last_error

	# --- messages ----------------------------------------------------------------------------------
	def send(self, message: Mapping[str, Any]) -> SendResult:
		"""Send a message body (from ``builders``) and return its wamid, or raise a typed error."""
		body = self._request("POST", self.url(self.phone_number_id, "messages"), json=dict(message))
		messages = body.get("messages")
		first = (
			messages[0] if isinstance(messages, list) and messages and isinstance(messages[0], dict) else {}
		)
		wamid = first.get("id")
		if not isinstance(wamid, str) or not wamid:
			# Accepted but unidentifiable: do not retry (it may have been sent).
			raise WhatsAppError("WhatsApp accepted the message but returned no message id", http_status=200)
		contacts = body.get("contacts")
		contact = (
			contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else {}
		)
		return SendResult(
			wamid=wamid,
			wa_id=contact.get("wa_id"),
			message_status=first.get("message_status"),
			raw=body,
		)

	def send_text(self, to: str, body: str, **options: Any) -> SendResult:
		"""Build and send a text message (see ``builders.text_message``)."""
		return self.send(builders.text_message(to, body, **options))

	def send_template(self, to: str, name: str, language: str, **options: Any) -> SendResult:
		"""Build and send a template message (see ``builders.template_message``)."""
		return self.send(builders.template_message(to, name, language, **options))

	def send_media(self, to: str, media_type: str, **options: Any) -> SendResult:
		"""Build and send a media message (see ``builders.media_message``)."""
		return self.send(builders.media_message(to, media_type, **options))

	def send_buttons(self, to: str, body: str, buttons: list[Any], **options: Any) -> SendResult:
		"""Build and send a reply-button message (see ``builders.buttons_message``)."""
		return self.send(builders.buttons_message(to, body, buttons, **options))

	def send_list(self, to: str, body: str, button: str, **options: Any) -> SendResult:
		"""Build and send a list message (see ``builders.list_message``)."""
		return self.send(builders.list_message(to, body, button, **options))

	def mark_read(self, wamid: str, *, typing_indicator: bool = False) -> bool:
		"""Mark an inbound message as read (blue ticks); optionally show "typing…". True on success."""
		body = builders.read_receipt(wamid)
		if typing_indicator:
			body["typing_indicator"] = {"type": "text"}
		answer = self._request("POST", self.url(self.phone_number_id, "messages"), json=body)
		return answer.get("success") is True

	# --- media -------------------------------------------------------------------------------
	def get_media(self, media_id: str) -> MediaInfo:
		"""Return the download URL and facts of a media object."""
		body = self._request("GET", self.url(str(media_id)), params={"phone_number_id": self.phone_number_id})
		url = body.get("url")
		if not isinstance(url, str) or not url:
			raise WhatsAppError(f"media {media_id} has no download URL")
		size = body.get("file_size")
		return MediaInfo(
			id=str(body.get("id") or media_id),
			url=url,
			mime_type=body.get("mime_type"),
			sha256=body.get("sha256"),
			file_size=int(size) if isinstance(size, int | str) and str(size).isdigit() else None,
		)

	def _is_trusted_media_url(self, url: str) -> bool:
		parts = urlsplit(url)
		if (parts.scheme, parts.netloc) == self._graph_origin:
			return True
		host = (parts.hostname or "").lower()
		return parts.scheme == "https" and any(host.endswith(suffix) for suffix in MEDIA_HOST_SUFFIXES)

	def download_media(self, url: str, *, max_bytes: int = DEFAULT_MAX_DOWNLOAD_BYTES) -> bytes:
		"""Download media from a ``get_media`` URL; refuse (``WhatsAppError``) beyond ``max_bytes``."""
		if not self._is_trusted_media_url(url):
			raise ValueError(f"refusing to send the WhatsApp token to {urlsplit(url).netloc!r}")
		last_error: WhatsAppError | None = None
		for attempt in range(1, self.max_attempts + 1):
			response = self._request_once("GET", url, stream=True)
			with response:
				if 200 <= response.status_code < 300:
					return self._read_capped(response, max_bytes)
				last_error = error_from_response(response.status_code, response.content)
			if not last_error.retryable or attempt == self.max_attempts:
				raise last_error
			self.sleep(self.backoff_delay(attempt))
		assert last_error is not None
		raise last_error

	@staticmethod
	def _read_capped(response: requests.Response, max_bytes: int) -> bytes:
		declared = response.headers.get("Content-Length")
		if declared and declared.isdigit() and int(declared) > max_bytes:
			raise WhatsAppError(
				f"media is {int(declared)} bytes; the limit is {max_bytes}", http_status=response.status_code
			)
		chunks: list[bytes] = []
		total = 0
		for chunk in response.iter_content(chunk_size=64 * 1024):
			total += len(chunk)
			if total > max_bytes:
				# The header can be missing or wrong; count what actually arrives.
				raise WhatsAppError(
					f"media is larger than the limit of {max_bytes} bytes", http_status=response.status_code
				)
			chunks.append(chunk)
		return b"".join(chunks)

	def upload_media(self, data: bytes, mime_type: str, filename: str) -> str:
		"""Upload media for sending by id; return the media id."""
		body = self._request(
			"POST",
			self.url(self.phone_number_id, "media"),
			data={"messaging_product": "whatsapp", "type": mime_type},
			files={"file": (filename, data, mime_type)},
		)
		media_id = body.get("id")
		if not media_id:
			raise WhatsAppError("WhatsApp accepted the upload but returned no media id", http_status=200)
		return str(media_id)

	def delete_media(self, media_id: str) -> bool:
		"""Delete an uploaded media object; True on success."""
		body = self._request(
			"DELETE", self.url(str(media_id)), params={"phone_number_id": self.phone_number_id}
		)
		return body.get("success") is True

	# --- templates ---------------------------------------------------------------------------
	def list_templates(
		self,
		waba_id: str,
		*,
		limit: int = 100,
		fields: str = "id,name,language,status,category,components",
	) -> Iterator[dict[str, Any]]:
		"""Yield every message template of a WhatsApp Business Account, following paging."""
		url: str | None = self.url(str(waba_id), "message_templates")
		params: dict[str, Any] | None = {"limit": limit, "fields": fields}
		seen: set[str] = set()
		while url:
			body = self._request("GET", url, params=params)
			for template in body.get("data") or []:
				if isinstance(template, dict):
					yield template
			next_url = body.get("paging", {}).get("next") if isinstance(body.get("paging"), dict) else None
			if not isinstance(next_url, str) or not next_url:
				return
			parts = urlsplit(next_url)
			if (parts.scheme, parts.netloc) != self._graph_origin:
				raise WhatsAppError(f"template paging points away from the Graph API: {parts.netloc!r}")
			# The token goes in the header only: drop any access_token Meta echoed into the URL.
			query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "access_token"]
			url = urlunsplit(parts._replace(query=urlencode(query)))
			if url in seen:
				return  # a cursor that points at itself would loop forever
			seen.add(url)
			params = None
