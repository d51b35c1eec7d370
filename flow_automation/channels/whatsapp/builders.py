"""Request bodies for ``POST /{phone_number_id}/messages``, checked against Meta's limits.

Two kinds of public function live here:

* ``*_message(to, ...)`` return the Graph API JSON body for one message, or raise
  ``MessageValidationError`` naming the first broken limit (all of them are listed in its
  ``problems``). Nothing reaches Meta that Meta would reject for a documented limit.
* ``check_*(...)`` take the same content without a recipient and return a list of
  ``Problem(field, message, limit)``; the flow validator calls them when a flow is saved,
  so the limits are written once, here (numbers in ``limits``).

Field names are JSON-pointer-ish paths in the caller's words, 0-based like JSON
(``/buttons/2/title``); messages count from 1 like people do ("button 3 title").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from . import limits
from .errors import MessageValidationError, Problem
from .phone import InvalidPhoneNumber, to_wa_id

Message = dict[str, Any]
# A button: {"id": "yes", "title": "Yes"}; a bare string stands for id = title.
ButtonSpec = Mapping[str, Any] | str
# A list row: {"id": "r1", "title": "Row", "description": "optional"}.
RowSpec = Mapping[str, Any]
# A list section: {"title": "Section", "rows": [RowSpec, ...]}.
SectionSpec = Mapping[str, Any]
# A media object: {"type": "image", "link": "https://..."} or {"type": "image", "id": "123"}.
MediaSpec = Mapping[str, Any]


# --- small checks ---------------------------------------------------------------------------
def _shown(value: str, width: int = 40) -> str:
	return repr(value if len(value) <= width else value[: width - 1] + "…")


def _check_length(
	problems: list[Problem],
	field: str,
	label: str,
	value: Any,
	limit: int,
	*,
	required: bool = True,
) -> None:
	"""Append a problem when ``value`` is missing (if required), not a string, or too long."""
	if value is None or (isinstance(value, str) and not value.strip()):
		if required:
			problems.append(Problem(field, f"{label} is empty; WhatsApp requires it"))
		return
	if not isinstance(value, str):
		problems.append(Problem(field, f"{label} must be text, not {type(value).__name__}", limit))
		return
	if len(value) > limit:
		problems.append(
			Problem(
				field,
				f"{label} {_shown(value)} is {len(value)} characters; WhatsApp allows at most {limit}",
				limit,
			)
		)


def _raise_first(problems: list[Problem]) -> None:
	if problems:
		first = problems[0]
		raise MessageValidationError(first.message, field=first.field, limit=first.limit, problems=problems)


def check_callback_data(callback_data: str | None) -> list[Problem]:
	"""Return problems with ``biz_opaque_callback_data`` (at most 512 characters)."""
	problems: list[Problem] = []
	_check_length(
		problems, "/callback_data", "callback data", callback_data, limits.CALLBACK_DATA_MAX, required=False
	)
	return problems


def _check_envelope(to: str, reply_to: str | None, callback_data: str | None) -> tuple[str, list[Problem]]:
	problems: list[Problem] = []
	wa_id = ""
	try:
		wa_id = to_wa_id(to)
	except InvalidPhoneNumber:
		problems.append(
			Problem("/to", f"recipient {to!r} must be E.164 ('+16505551234') or a wa_id; normalise it first")
		)
	if reply_to is not None and (not isinstance(reply_to, str) or not reply_to.strip()):
		problems.append(Problem("/reply_to", "reply_to must be the wamid of the message being answered"))
	problems.extend(check_callback_data(callback_data))
	return wa_id, problems


def _envelope(
	wa_id: str, kind: str, content: Any, reply_to: str | None, callback_data: str | None
) -> Message:
	message: Message = {
		"messaging_product": limits.MESSAGING_PRODUCT,
		"recipient_type": limits.RECIPIENT_TYPE,
		"to": wa_id,
	}
	if reply_to:
		message["context"] = {"message_id": reply_to}
	message["type"] = kind
	message[kind] = content
	if callback_data:
		message["biz_opaque_callback_data"] = callback_data
	return message


def _check_media_source(problems: list[Problem], field: str, label: str, link: Any, media_id: Any) -> None:
	if (link is None) == (media_id is None):
		problems.append(Problem(field, f"{label} needs exactly one of link or media id"))
		return
	if link is not None:
		try:
			parts = urlsplit(link) if isinstance(link, str) else None
		except ValueError:  # e.g. "http://[::1" (unbalanced IPv6 bracket)
			parts = None
		if parts is None or parts.scheme not in limits.MEDIA_LINK_SCHEMES or not parts.netloc:
			problems.append(Problem(f"{field}/link", f"{label} link {link!r} must be an http(s) URL"))
	elif not isinstance(media_id, str | int) or not str(media_id).strip():
		problems.append(Problem(f"{field}/id", f"{label} media id {media_id!r} is not a media id"))


def _media_object(link: str | None, media_id: str | int | None) -> dict[str, Any]:
	return {"link": link} if link is not None else {"id": str(media_id)}


# --- text -------------------------------------------------------------------------------
def check_text(body: str) -> list[Problem]:
	"""Return problems with a free-form text body (required, at most 4096 characters)."""
	problems: list[Problem] = []
	_check_length(problems, "/body", "text body", body, limits.TEXT_BODY_MAX)
	return problems


def text_message(
	to: str,
	body: str,
	*,
	preview_url: bool = False,
	reply_to: str | None = None,
	callback_data: str | None = None,
) -> Message:
	"""Return the body of a text message, or raise ``MessageValidationError``."""
	wa_id, problems = _check_envelope(to, reply_to, callback_data)
	problems.extend(check_text(body))
	_raise_first(problems)
	return _envelope(wa_id, "text", {"preview_url": bool(preview_url), "body": body}, reply_to, callback_data)


# --- media ------------------------------------------------------------------------------
def check_media(
	media_type: str,
	*,
	link: str | None = None,
	media_id: str | None = None,
	caption: str | None = None,
	filename: str | None = None,
) -> list[Problem]:
	"""Return problems with a media message (type, source, caption, filename)."""
	problems: list[Problem] = []
	if media_type not in limits.MEDIA_TYPES:
		problems.append(
			Problem("/media_type", f"media type {media_type!r} is not one of {', '.join(limits.MEDIA_TYPES)}")
		)
		return problems
	_check_media_source(problems, "/media", media_type, link, media_id)
	if caption is not None:
		if media_type not in limits.MEDIA_TYPES_WITH_CAPTION:
			problems.append(Problem("/caption", f"WhatsApp does not show a caption on {media_type} messages"))
		else:
			_check_length(problems, "/caption", "caption", caption, limits.MEDIA_CAPTION_MAX, required=False)
	if filename is not None and media_type != "document":
		problems.append(Problem("/filename", f"a filename applies to documents only, not {media_type}"))
	return problems


def check_media_size(media_type: str, size: int) -> list[Problem]:
	"""Return a problem if ``size`` bytes exceeds what WhatsApp accepts for ``media_type``."""
	limit = limits.MEDIA_MAX_BYTES.get(media_type)
	if limit is None or size <= limit:
		return []
	return [
		Problem(
			"/media",
			f"{media_type} is {size / 1048576:.1f} MB; WhatsApp allows at most {limit / 1048576:g} MB",
			limit,
		)
	]


def media_message(
	to: str,
	media_type: str,
	*,
	link: str | None = None,
	media_id: str | None = None,
	caption: str | None = None,
	filename: str | None = None,
	reply_to: str | None = None,
	callback_data: str | None = None,
) -> Message:
	"""Return the body of an image/video/audio/document/sticker message, or raise."""
	wa_id, problems = _check_envelope(to, reply_to, callback_data)
	problems.extend(check_media(media_type, link=link, media_id=media_id, caption=caption, filename=filename))
	_raise_first(problems)
	content = _media_object(link, media_id)
	if caption:
		content["caption"] = caption
	if filename:
		content["filename"] = filename
	return _envelope(wa_id, media_type, content, reply_to, callback_data)


# --- interactive: shared parts ------------------------------------------------------------
def _check_frame(
	problems: list[Problem],
	body: Any,
	header: str | MediaSpec | None,
	footer: str | None,
	header_types: tuple[str, ...],
	body_max: int,
) -> None:
	_check_length(problems, "/body", "body", body, body_max)
	_check_length(problems, "/footer", "footer", footer, limits.INTERACTIVE_FOOTER_MAX, required=False)
	if header is None or isinstance(header, str):
		_check_length(
			problems, "/header", "header", header, limits.INTERACTIVE_HEADER_TEXT_MAX, required=False
		)
	elif isinstance(header, Mapping):
		kind = header.get("type")
		if kind not in header_types:
			allowed = "text only" if header_types == ("text",) else ", ".join(header_types)
			problems.append(Problem("/header/type", f"header type {kind!r} is not allowed here ({allowed})"))
		elif kind == "text":
			_check_length(
				problems, "/header/text", "header", header.get("text"), limits.INTERACTIVE_HEADER_TEXT_MAX
			)
		else:
			_check_media_source(problems, "/header", f"{kind} header", header.get("link"), header.get("id"))
	else:
		problems.append(Problem("/header", "header must be text or a media object"))


def _frame(body: str, header: str | MediaSpec | None, footer: str | None, kind: str) -> dict[str, Any]:
	interactive: dict[str, Any] = {"type": kind}
	if isinstance(header, Mapping) and header.get("type") == "text":
		header = header.get("text")
	if isinstance(header, str) and header:
		interactive["header"] = {"type": "text", "text": header}
	elif isinstance(header, Mapping):
		media_kind = header["type"]
		media = _media_object(header.get("link"), header.get("id"))
		if media_kind == "document" and header.get("filename"):
			media["filename"] = header["filename"]
		interactive["header"] = {"type": media_kind, media_kind: media}
	interactive["body"] = {"text": body}
	if footer:
		interactive["footer"] = {"text": footer}
	return interactive


def _button_fields(button: Any) -> tuple[Any, Any]:
	if isinstance(button, str):
		return button, button
	if isinstance(button, Mapping):
		return button.get("id"), button.get("title")
	return None, None


# --- interactive: reply buttons ----------------------------------------------------------------
def _check_unique(
	problems: list[Problem], seen: dict[str, str], key: str, field: str, what: str, where: str, rule: str
) -> None:
	"""A problem when `key` was seen before (naming where); otherwise remember it as `where`."""
	if key in seen:
		problems.append(Problem(field, f"{what} repeats {seen[key]}; {rule}"))
	seen.setdefault(key, where)


def check_buttons(
	buttons: Sequence[ButtonSpec],
	*,
	body: str | None = None,
	header: str | MediaSpec | None = None,
	footer: str | None = None,
) -> list[Problem]:
	"""Return problems with reply buttons (1-3, titles <= 20, unique ids <= 256), and frame if given."""
	problems: list[Problem] = []
	if body is not None or header is not None or footer is not None:
		_check_frame(problems, body, header, footer, limits.BUTTONS_HEADER_TYPES, limits.INTERACTIVE_BODY_MAX)
	if isinstance(buttons, str | Mapping) or not isinstance(buttons, Sequence) or not buttons:
		problems.append(Problem("/buttons", "a reply-button message needs at least one button", 1))
		return problems
	if len(buttons) > limits.REPLY_BUTTONS_MAX:
		problems.append(
			Problem(
				"/buttons",
				f"{len(buttons)} buttons; WhatsApp allows at most {limits.REPLY_BUTTONS_MAX} reply buttons "
				"(use a list for more choices)",
				limits.REPLY_BUTTONS_MAX,
			)
		)
	seen_ids: dict[str, str] = {}
	seen_titles: dict[str, str] = {}
	for i, button in enumerate(buttons):
		field, label = f"/buttons/{i}", f"button {i + 1}"
		if not isinstance(button, str | Mapping):
			problems.append(Problem(field, f"{label} must be {{'id', 'title'}}, not {type(button).__name__}"))
			continue
		button_id, title = _button_fields(button)
		_check_length(problems, f"{field}/id", f"{label} id", button_id, limits.REPLY_BUTTON_ID_MAX)
		_check_length(problems, f"{field}/title", f"{label} title", title, limits.REPLY_BUTTON_TITLE_MAX)
		if isinstance(button_id, str) and button_id.strip():
			_check_unique(
				problems,
				seen_ids,
				button_id,
				f"{field}/id",
				f"{label} id {button_id!r}",
				label,
				"ids must be unique",
			)
		if isinstance(title, str) and title.strip():
			# Two buttons that look the same cannot be told apart by the user either.
			key = title.strip().casefold()
			_check_unique(
				problems,
				seen_titles,
				key,
				f"{field}/title",
				f"{label} title {title!r}",
				label,
				"titles must be unique",
			)
	return problems


def buttons_message(
	to: str,
	body: str,
	buttons: Sequence[ButtonSpec],
	*,
	header: str | MediaSpec | None = None,
	footer: str | None = None,
	reply_to: str | None = None,
	callback_data: str | None = None,
) -> Message:
	"""Return the body of an interactive reply-button message, or raise."""
	wa_id, problems = _check_envelope(to, reply_to, callback_data)
	_check_frame(problems, body, header, footer, limits.BUTTONS_HEADER_TYPES, limits.INTERACTIVE_BODY_MAX)
	problems.extend(check_buttons(buttons))
	_raise_first(problems)
	interactive = _frame(body, header, footer, "button")
	interactive["action"] = {
		"buttons": [
			{"type": "reply", "reply": {"id": button_id, "title": title}}
			for button_id, title in map(_button_fields, buttons)
		]
	}
	return _envelope(wa_id, "interactive", interactive, reply_to, callback_data)


# --- interactive: list ------------------------------------------------------------------------
def _as_sections(
	rows: Sequence[RowSpec] | None, sections: Sequence[SectionSpec] | None
) -> tuple[list[tuple[int, Any, Any]], list[Problem]]:
	"""Return [(section index, title, rows)] for either argument form, plus shape problems."""
	if (rows is None) == (sections is None):
		return [], [Problem("/rows", "a list message needs either rows or sections (not both)")]
	if rows is not None:
		return [(0, None, rows)], []
	if isinstance(sections, str | Mapping) or not isinstance(sections, Sequence):
		return [], [Problem("/sections", "sections must be a list of {'title', 'rows'}")]
	out: list[tuple[int, Any, Any]] = []
	problems: list[Problem] = []
	for i, section in enumerate(sections):
		if not isinstance(section, Mapping):
			problems.append(Problem(f"/sections/{i}", f"section {i + 1} must be {{'title', 'rows'}}"))
			continue
		out.append((i, section.get("title"), section.get("rows")))
	return out, problems


def check_list(
	button: str,
	rows: Sequence[RowSpec] | None = None,
	sections: Sequence[SectionSpec] | None = None,
	*,
	body: str | None = None,
	header: str | MediaSpec | None = None,
	footer: str | None = None,
) -> list[Problem]:
	"""Return problems with a list message: button text, <= 10 sections, <= 10 rows in all, lengths."""
	problems: list[Problem] = []
	if body is not None or header is not None or footer is not None:
		_check_frame(problems, body, header, footer, limits.LIST_HEADER_TYPES, limits.LIST_BODY_MAX)
	_check_length(problems, "/button", "list button text", button, limits.LIST_BUTTON_TEXT_MAX)
	parts, shape_problems = _as_sections(rows, sections)
	problems.extend(shape_problems)
	if isinstance(sections, list | tuple) and len(sections) > limits.LIST_SECTIONS_MAX:
		problems.append(
			Problem(
				"/sections",
				f"{len(sections)} sections; WhatsApp allows at most {limits.LIST_SECTIONS_MAX}",
				limits.LIST_SECTIONS_MAX,
			)
		)
	total = 0
	seen_ids: dict[str, str] = {}
	for s, title, section_rows in parts:
		prefix = "/rows" if sections is None else f"/sections/{s}/rows"
		if sections is not None:
			_check_length(
				problems,
				f"/sections/{s}/title",
				f"section {s + 1} title",
				title,
				limits.LIST_SECTION_TITLE_MAX,
				# Meta requires section titles once there is more than one section.
				required=len(sections) > 1,
			)
		if (
			isinstance(section_rows, str | Mapping)
			or not isinstance(section_rows, Sequence)
			or not section_rows
		):
			problems.append(Problem(prefix, f"{'section ' + str(s + 1) if sections else 'list'} has no rows"))
			continue
		for r, row in enumerate(section_rows):
			total += 1
			field = f"{prefix}/{r}"
			label = f"row {total}" if sections is None else f"section {s + 1} row {r + 1}"
			if not isinstance(row, Mapping):
				problems.append(Problem(field, f"{label} must be {{'id', 'title', 'description'}}"))
				continue
			row_id = row.get("id")
			_check_length(problems, f"{field}/id", f"{label} id", row_id, limits.LIST_ROW_ID_MAX)
			_check_length(
				problems, f"{field}/title", f"{label} title", row.get("title"), limits.LIST_ROW_TITLE_MAX
			)
			_check_length(
				problems,
				f"{field}/description",
				f"{label} description",
				row.get("description"),
				limits.LIST_ROW_DESCRIPTION_MAX,
				required=False,
			)
			if isinstance(row_id, str) and row_id.strip():
				_check_unique(
					problems,
					seen_ids,
					row_id,
					f"{field}/id",
					f"{label} id {row_id!r}",
					label,
					"row ids must be unique in the list",
				)
	if total > limits.LIST_ROWS_MAX:
		problems.append(
			Problem(
				"/rows" if sections is None else "/sections",
				f"{total} rows; WhatsApp allows at most {limits.LIST_ROWS_MAX} rows in all sections together",
				limits.LIST_ROWS_MAX,
			)
		)
	return problems


def _row(row: RowSpec) -> dict[str, Any]:
	out = {"id": row["id"], "title": row["title"]}
	if row.get("description"):
		out["description"] = row["description"]
	return out


def list_message(
	to: str,
	body: str,
	button: str,
	rows: Sequence[RowSpec] | None = None,
	sections: Sequence[SectionSpec] | None = None,
	*,
	header: str | MediaSpec | None = None,
	footer: str | None = None,
	reply_to: str | None = None,
	callback_data: str | None = None,
) -> Message:
	"""Return the body of an interactive list message (``rows`` or ``sections``), or raise."""
	wa_id, problems = _check_envelope(to, reply_to, callback_data)
	_check_frame(problems, body, header, footer, limits.LIST_HEADER_TYPES, limits.LIST_BODY_MAX)
	problems.extend(check_list(button, rows, sections))
	_raise_first(problems)
	if rows is not None:
		out_sections: list[dict[str, Any]] = [{"rows": [_row(row) for row in rows]}]
	else:
		out_sections = []
		for section in sections or ():
			out_section: dict[str, Any] = {}
			if section.get("title"):
				out_section["title"] = section["title"]
			out_section["rows"] = [_row(row) for row in section["rows"]]
			out_sections.append(out_section)
	interactive = _frame(body, header, footer, "list")
	interactive["action"] = {"button": button, "sections": out_sections}
	return _envelope(wa_id, "interactive", interactive, reply_to, callback_data)


# --- templates ----------------------------------------------------------------------------------
HeaderParams = Sequence[str | Mapping[str, Any]] | MediaSpec | str
BodyParams = Sequence[str | int | float | Mapping[str, Any]] | Mapping[str, Any]
TemplateButtonSpec = Mapping[str, Any] | str


def _is_media_header(header_params: Any) -> bool:
	return (
		isinstance(header_params, Mapping) and header_params.get("type") in limits.TEMPLATE_HEADER_MEDIA_TYPES
	)


def _text_params(
	problems: list[Problem], field: str, label: str, params: Any, limit: int
) -> list[dict[str, Any]]:
	"""Check and convert positional or named text parameters to Graph parameter objects."""
	out: list[dict[str, Any]] = []
	if params is None:
		return out
	if isinstance(params, str):
		params = [params]
	if isinstance(params, Mapping):
		# {"first_name": "Jo"}: named parameters, in the mapping's order.
		params = [{"parameter_name": key, "text": value} for key, value in params.items()]
	if not isinstance(params, Sequence):
		problems.append(Problem(field, f"{label} parameters must be a list or a mapping of names to values"))
		return out
	named = positional = 0
	for i, param in enumerate(params):
		item_field, item_label = f"{field}/{i}", f"{label} parameter {i + 1}"
		if isinstance(param, Mapping) and param.get("type") not in (None, "text"):
			out.append(dict(param))  # currency, date_time, ...: Meta's own object, passed through
			continue
		name: Any = None
		if isinstance(param, Mapping):
			name = param.get("parameter_name", param.get("name"))
			value = param.get("text", param.get("value"))
		else:
			value = param
		if isinstance(value, int | float) and not isinstance(value, bool):
			value = str(value)  # quantities and amounts rendered by a flow arrive as numbers
		if name is not None:
			named += 1
			item_label = f"{label} parameter {name!r}"
			if not isinstance(name, str) or not limits.TEMPLATE_PARAMETER_NAME_PATTERN.match(name):
				problems.append(
					Problem(
						f"{item_field}/parameter_name",
						f"{item_label}: names use lower-case letters, digits and underscores",
					)
				)
		else:
			positional += 1
		before = len(problems)
		_check_length(problems, item_field, item_label, value, limit)
		if (
			len(problems) == before
			and isinstance(value, str)
			and limits.TEMPLATE_PARAM_FORBIDDEN.search(value)
		):
			problems.append(
				Problem(
					item_field,
					f"{item_label} contains a new line, a tab or more than 4 spaces in a row, "
					"which WhatsApp rejects in template parameters",
				)
			)
		converted: dict[str, Any] = {"type": "text"}
		if name is not None:
			converted["parameter_name"] = name
		converted["text"] = value
		out.append(converted)
	if named and positional:
		problems.append(Problem(field, f"{label} parameters mix named and positional values; use one kind"))
	return out


def _template_buttons(problems: list[Problem], buttons: Any) -> list[dict[str, Any]]:
	out: list[dict[str, Any]] = []
	if buttons is None:
		return out
	if isinstance(buttons, str | Mapping) or not isinstance(buttons, Sequence):
		problems.append(Problem("/buttons", "template buttons must be a list"))
		return out
	if len(buttons) > limits.TEMPLATE_BUTTONS_MAX:
		problems.append(
			Problem(
				"/buttons",
				f"{len(buttons)} template buttons; WhatsApp allows at most {limits.TEMPLATE_BUTTONS_MAX}",
				limits.TEMPLATE_BUTTONS_MAX,
			)
		)
	seen: set[str] = set()
	for i, button in enumerate(buttons):
		field, label = f"/buttons/{i}", f"template button {i + 1}"
		if isinstance(button, str):
			button = {"id": button}
		if not isinstance(button, Mapping):
			problems.append(Problem(field, f"{label} must be a mapping"))
			continue
		if "id" in button and "sub_type" not in button:
			# Shorthand: [{"id": "accept"}, ...] are the quick-reply payloads, in order.
			button = {"index": i, "sub_type": "quick_reply", "payload": button["id"]}
		sub_type = button.get("sub_type", "quick_reply")
		index = button.get("index", i)
		index_text = str(index)
		if (
			isinstance(index, bool)
			or not index_text.isdigit()
			or int(index_text) >= limits.TEMPLATE_BUTTONS_MAX
		):
			problems.append(Problem(f"{field}/index", f"{label} index {index!r} must be 0 to 9"))
		elif index_text in seen:
			problems.append(Problem(f"{field}/index", f"{label} index {index_text} is used twice"))
		seen.add(index_text)
		if sub_type == "quick_reply":
			value, parameter = button.get("payload"), "payload"
		elif sub_type == "url":
			value, parameter = button.get("text"), "text"
		elif sub_type == "copy_code":
			value, parameter = button.get("coupon_code", button.get("text")), "coupon_code"
		else:
			problems.append(
				Problem(
					f"{field}/sub_type",
					f"{label} sub_type {sub_type!r} is not one of {', '.join(limits.TEMPLATE_BUTTON_SUB_TYPES)}",
				)
			)
			continue
		if not isinstance(value, str) or not value.strip():
			problems.append(
				Problem(f"{field}/{parameter}", f"{label} ({sub_type}) needs a {parameter} value")
			)
		out.append(
			{
				"type": "button",
				"sub_type": sub_type,
				"index": index_text,
				"parameters": [{"type": parameter, parameter: value}],
			}
		)
	return out


def _template_parts(
	name: Any,
	language: Any,
	header_params: HeaderParams | None,
	body_params: BodyParams | None,
	buttons: Sequence[TemplateButtonSpec] | None,
) -> tuple[list[dict[str, Any]], list[Problem]]:
	problems: list[Problem] = []
	if not isinstance(name, str) or not name:
		problems.append(Problem("/name", "template name is empty"))
	elif len(name) > limits.TEMPLATE_NAME_MAX:
		problems.append(
			Problem(
				"/name",
				f"template name is {len(name)} characters; WhatsApp allows at most {limits.TEMPLATE_NAME_MAX}",
				limits.TEMPLATE_NAME_MAX,
			)
		)
	elif not limits.TEMPLATE_NAME_PATTERN.match(name):
		problems.append(
			Problem(
				"/name", f"template name {name!r} may use only lower-case letters, digits and underscores"
			)
		)
	if not isinstance(language, str) or not limits.TEMPLATE_LANGUAGE_PATTERN.match(language):
		problems.append(
			Problem("/language", f"template language {language!r} is not a code such as 'en' or 'en_US'")
		)
	components: list[dict[str, Any]] = []
	if _is_media_header(header_params):
		assert isinstance(header_params, Mapping)
		kind = header_params["type"]
		_check_media_source(
			problems, "/header", f"{kind} header", header_params.get("link"), header_params.get("id")
		)
		media = _media_object(header_params.get("link"), header_params.get("id"))
		if kind == "document" and header_params.get("filename"):
			media["filename"] = header_params["filename"]
		components.append({"type": "header", "parameters": [{"type": kind, kind: media}]})
	elif isinstance(header_params, Mapping) and "type" in header_params:
		problems.append(
			Problem(
				"/header/type",
				f"header type {header_params['type']!r} is not one of "
				f"{', '.join(limits.TEMPLATE_HEADER_MEDIA_TYPES)} or text parameters",
			)
		)
	else:
		header = _text_params(problems, "/header", "header", header_params, limits.TEMPLATE_HEADER_PARAM_MAX)
		if header:
			components.append({"type": "header", "parameters": header})
	body = _text_params(problems, "/body", "body", body_params, limits.TEMPLATE_BODY_PARAM_MAX)
	if body:
		components.append({"type": "body", "parameters": body})
	components.extend(_template_buttons(problems, buttons))
	return components, problems


def check_template(
	name: str,
	language: str,
	*,
	header_params: HeaderParams | None = None,
	body_params: BodyParams | None = None,
	buttons: Sequence[TemplateButtonSpec] | None = None,
) -> list[Problem]:
	"""Return problems with a template message's name, language and parameters."""
	return _template_parts(name, language, header_params, body_params, buttons)[1]


def template_message(
	to: str,
	name: str,
	language: str,
	*,
	header_params: HeaderParams | None = None,
	body_params: BodyParams | None = None,
	buttons: Sequence[TemplateButtonSpec] | None = None,
	reply_to: str | None = None,
	callback_data: str | None = None,
) -> Message:
	"""Return the body of a template message, or raise ``MessageValidationError``.

	``header_params``: text parameters (a list, or one string), or one media header
	``{"type": "image"|"video"|"document", "link"|"id": ...}``. ``body_params``: a list of
	values (positional ``{{1}}``...), a list of ``{"parameter_name", "text"}``, or a mapping
	name -> value (named ``{{first_name}}``); a dict with another ``type`` (currency,
	date_time) passes through. ``buttons``: ``{"index", "sub_type": "quick_reply"|"url"|
	"copy_code", "payload"|"text"|"coupon_code"}``, or ``[{"id": "accept"}, ...]`` for the
	quick-reply payloads in order.
	"""
	wa_id, problems = _check_envelope(to, reply_to, callback_data)
	components, template_problems = _template_parts(name, language, header_params, body_params, buttons)
	problems.extend(template_problems)
	_raise_first(problems)
	template: dict[str, Any] = {"name": name, "language": {"code": language}}
	if components:
		template["components"] = components
	return _envelope(wa_id, "template", template, reply_to, callback_data)


def read_receipt(wamid: str) -> Message:
	"""Return the body that marks an inbound message (and earlier ones) as read."""
	if not isinstance(wamid, str) or not wamid.strip():
		raise MessageValidationError("message id to mark as read is empty", field="/message_id")
	return {"messaging_product": limits.MESSAGING_PRODUCT, "status": "read", "message_id": wamid}
