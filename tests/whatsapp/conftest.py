"""Fixtures for the WhatsApp channel tests: a real loopback Graph API and a client for it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Works in pytest's default "prepend" import mode and in "importlib" mode alike: make this
# folder (for wa_testkit) and the repository root (for flow_automation) importable.
_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parents[1]):
	if str(_path) not in sys.path:
		sys.path.insert(0, str(_path))

from wa_testkit import PHONE_NUMBER_ID, TOKEN

from flow_automation.channels.whatsapp import CloudAPIClient, FakeGraphAPI


@pytest.fixture
def graph() -> Iterator[FakeGraphAPI]:
	with FakeGraphAPI(access_token=TOKEN) as fake:
		yield fake


@pytest.fixture
def sleeps() -> list[float]:
	return []


@pytest.fixture
def client(graph: FakeGraphAPI, sleeps: list[float]) -> Iterator[CloudAPIClient]:
	with CloudAPIClient(
		PHONE_NUMBER_ID, TOKEN, base_url=graph.base_url, sleep=sleeps.append, timeout=(2, 5)
	) as api:
		yield api
