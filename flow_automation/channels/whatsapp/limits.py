"""Meta's WhatsApp Cloud API limits, in one place.

Every number the builders, the flow validator and the client check comes from here, so a
change in Meta's documentation is a change in this file only.

Lengths are counted in Unicode code points (Python's ``len``). Meta documents its limits
in "characters" without saying how it counts an emoji or a combined glyph; an emoji made
of several code points counts as several here, which errs on the safe side.

Where Meta's pages disagree, the smaller value is used (see ``LIST_BODY_MAX``).
"""

from __future__ import annotations

import re

# --- every message ----------------------------------------------------------------------
MESSAGING_PRODUCT = "whatsapp"
RECIPIENT_TYPE = "individual"
# ``biz_opaque_callback_data``: echoed back in status webhooks for this message.
CALLBACK_DATA_MAX = 512
# Free-form (non-template) messages may be sent only this long after the contact's last
# message to the business: the customer service window.
CUSTOMER_SERVICE_WINDOW_SECONDS = 24 * 60 * 60

# --- text -------------------------------------------------------------------------------
TEXT_BODY_MAX = 4096

# --- media ------------------------------------------------------------------------------
MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")
# Audio and stickers are shown without a caption; Meta rejects a caption on them.
MEDIA_TYPES_WITH_CAPTION = ("image", "video", "document")
MEDIA_CAPTION_MAX = 1024
# Meta's per-type size caps for media it accepts (bytes). Inbound downloads use the
# client's ``max_bytes`` instead, because documents may legitimately be large.
MEDIA_MAX_BYTES = {
	"image": 5 * 1024 * 1024,
	"video": 16 * 1024 * 1024,
	"audio": 16 * 1024 * 1024,
	"document": 100 * 1024 * 1024,
	"sticker": 500 * 1024,  # 100 KB for static, 500 KB for animated stickers
}
MEDIA_LINK_SCHEMES = ("https", "http")

# --- interactive (reply buttons and lists) ----------------------------------------------
# Reply-button and list bodies are documented as 1024 characters in the interactive
# object reference; the newer list-message page says 4096 for lists. The smaller value is
# used for both: a list body of 1025-4096 characters is refused here although Meta may
# accept it, but nothing is sent that Meta could reject.
INTERACTIVE_BODY_MAX = 1024
LIST_BODY_MAX = INTERACTIVE_BODY_MAX
INTERACTIVE_HEADER_TEXT_MAX = 60
INTERACTIVE_FOOTER_MAX = 60
# Reply buttons may carry a media header; lists only a text header.
BUTTONS_HEADER_TYPES = ("text", "image", "video", "document")
LIST_HEADER_TYPES = ("text",)

REPLY_BUTTONS_MAX = 3
REPLY_BUTTON_TITLE_MAX = 20
REPLY_BUTTON_ID_MAX = 256

LIST_BUTTON_TEXT_MAX = 20
LIST_ROWS_MAX = 10  # across all sections together
LIST_SECTIONS_MAX = 10
LIST_SECTION_TITLE_MAX = 24  # required once there is more than one section
LIST_ROW_TITLE_MAX = 24
LIST_ROW_DESCRIPTION_MAX = 72
LIST_ROW_ID_MAX = 200

# --- templates --------------------------------------------------------------------------
# Template names: lower-case letters, digits and underscores (Meta lower-cases and
# rejects anything else when the template is created), at most 512 characters.
TEMPLATE_NAME_MAX = 512
TEMPLATE_NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
# Language codes as Meta lists them: "en", "en_US", "pt_BR", "zh_HK", "fil", "ka".
TEMPLATE_LANGUAGE_PATTERN = re.compile(r"^[a-z]{2,3}(_[A-Z]{2})?$")
# Named parameters ("{{first_name}}"): lower-case letters, digits and underscores.
TEMPLATE_PARAMETER_NAME_PATTERN = re.compile(r"^[a-z0-9_]+$")
# Text parameters: 60 characters in a header; 1024 in the body when other components are
# present (32768 for a body-only template, which this module does not try to detect).
TEMPLATE_HEADER_PARAM_MAX = 60
TEMPLATE_BODY_PARAM_MAX = 1024
# Meta error 132018: a parameter may not contain a new line, a tab, or more than four
# consecutive spaces.
TEMPLATE_PARAM_FORBIDDEN = re.compile(r"[\n\r\t]| {5,}")
TEMPLATE_BUTTONS_MAX = 10  # index "0" .. "9"
TEMPLATE_BUTTON_SUB_TYPES = ("quick_reply", "url", "copy_code")
TEMPLATE_HEADER_MEDIA_TYPES = ("image", "video", "document")

# --- webhook ----------------------------------------------------------------------------
WEBHOOK_OBJECT = "whatsapp_business_account"
SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
