"""Every typed key of the app and of a request, in one place (aiohttp's ``AppKey``/``RequestKey``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from nanogpt_companion.account import AccountService
    from nanogpt_companion.catalog import CatalogService
    from nanogpt_companion.config import Settings
    from nanogpt_companion.doctor_service import DoctorService
    from nanogpt_companion.events import EventBus
    from nanogpt_companion.nanogpt.client import NanoGPTClient
    from nanogpt_companion.store import Store
    from nanogpt_companion.users import User, UserRegistry
    from nanogpt_companion.web.security import AccessPolicy
    from nanogpt_companion.web.sse import TicketBook


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
OPENAPI = web.AppKey[bytes]("openapi")

CURRENT_USER = web.RequestKey["User"]("current_user")
