"""Every typed key of the app and of a request, in one place (aiohttp's ``AppKey``/``RequestKey``)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:  # the services import nothing from web/, but security and sse import this module
    from nanogpt_companion.account import AccountService  # noqa: F401
    from nanogpt_companion.catalog import CatalogService  # noqa: F401
    from nanogpt_companion.config import Settings  # noqa: F401
    from nanogpt_companion.doctor_service import DoctorService  # noqa: F401
    from nanogpt_companion.events import EventBus  # noqa: F401
    from nanogpt_companion.key_slots import KeySlotService  # noqa: F401
    from nanogpt_companion.nanogpt.client import NanoGPTClient  # noqa: F401
    from nanogpt_companion.plugin_link import PluginLink  # noqa: F401
    from nanogpt_companion.providers import ProviderService  # noqa: F401
    from nanogpt_companion.spend.service import SpendService  # noqa: F401
    from nanogpt_companion.store import Store  # noqa: F401
    from nanogpt_companion.users import User, UserRegistry  # noqa: F401
    from nanogpt_companion.web.security import AccessPolicy  # noqa: F401
    from nanogpt_companion.web.sse import TicketBook  # noqa: F401


SETTINGS = web.AppKey["Settings"]("settings")
HTTP_SESSION = web.AppKey[aiohttp.ClientSession]("http_session")
NANOGPT = web.AppKey["NanoGPTClient"]("nanogpt")
STORE = web.AppKey["Store"]("store")
BUS = web.AppKey["EventBus"]("bus")
USERS = web.AppKey["UserRegistry"]("users")
CATALOG = web.AppKey["CatalogService"]("catalog")
ACCOUNT = web.AppKey["AccountService"]("account")
DOCTOR = web.AppKey["DoctorService | None"]("doctor")
TICKETS = web.AppKey["TicketBook"]("tickets")
ACCESS = web.AppKey["AccessPolicy"]("access")
STOPPING = web.AppKey[asyncio.Event]("stopping")
PLUGIN_LINK = web.AppKey["PluginLink"]("plugin_link")
KEY_SLOTS = web.AppKey["KeySlotService"]("key_slots")
PROVIDERS = web.AppKey["ProviderService"]("providers")
SPEND = web.AppKey["SpendService"]("spend")

CURRENT_USER = web.RequestKey["User"]("current_user")
