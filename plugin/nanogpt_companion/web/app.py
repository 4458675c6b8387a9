"""The aiohttp application factory: settings in, a ready app out; resources live in ``cleanup_ctx``."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from nanogpt_companion import __version__
from nanogpt_companion.account import AccountService
from nanogpt_companion.catalog import CatalogDiff, CatalogService, CatalogSnapshot
from nanogpt_companion.config import Settings
from nanogpt_companion.doctor_service import DoctorService
from nanogpt_companion.events import EventBus
from nanogpt_companion.key_slots import KeySlotService
from nanogpt_companion.nanogpt.client import NanoGPTClient
from nanogpt_companion.plugin_link import PluginLink
from nanogpt_companion.providers import ProviderService
from nanogpt_companion.sillytavern.dataroot import read_st_config
from nanogpt_companion.sillytavern.version import UNKNOWN_VERSION, STVersion
from nanogpt_companion.spend.ledger import SpendLedger
from nanogpt_companion.spend.service import SpendService
from nanogpt_companion.store import Store
from nanogpt_companion.users import UserRegistry
from nanogpt_companion.watcher import SettingsWatcher
from nanogpt_companion.web import keys
from nanogpt_companion.web.routes import setup_routes
from nanogpt_companion.web.security import AccessPolicy, add_cors_headers, security_middleware
from nanogpt_companion.web.sse import TicketBook

log = logging.getLogger(__name__)

MAX_REQUEST_BODY = 64 * 1024  # our JSON requests are tiny; anything larger is a mistake or an attack
USER_RESCAN_INTERVAL = 10.0
DEFAULT_ST_PORT = 8000


def resolve_data_root(settings: Settings) -> tuple[Path | None, int]:
    """The ST data root and ST's port (for CORS), from --data-root or the ST install's config.yaml."""
    st_port = DEFAULT_ST_PORT
    data_root = settings.data_root
    if settings.sillytavern is not None:
        st_config = read_st_config(settings.sillytavern)
        st_port = st_config.port
        data_root = data_root or st_config.data_root
    return data_root, settings.st_port or st_port


def init_app(settings: Settings) -> web.Application:
    data_root, st_port = resolve_data_root(settings)
    app = web.Application(middlewares=[security_middleware], client_max_size=MAX_REQUEST_BODY)
    app[keys.SETTINGS] = settings
    app[keys.ACCESS] = AccessPolicy.build(
        st_port=st_port,
        extra_origins=settings.allow_origins,
        extra_hosts=settings.allow_hosts,
        bind_host=settings.host,
    )
    app[keys.BUS] = EventBus()
    app[keys.TICKETS] = TicketBook()
    app[keys.STOPPING] = asyncio.Event()
    app[keys.USERS] = UserRegistry(
        data_root=data_root,
        state_dir=settings.state_dir,
        public_url=settings.public_url,
        config_key=settings.api_key.get_secret_value() if settings.api_key else None,
        st_dir=settings.sillytavern,
    )
    app[keys.PLUGIN_LINK] = PluginLink(settings.sillytavern, settings.public_url)
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_store)
    app.cleanup_ctx.append(_services)
    app.on_response_prepare.append(add_cors_headers)
    app.on_shutdown.append(_signal_stop)
    setup_routes(app)
    return app


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    session = aiohttp.ClientSession(
        headers={"User-Agent": f"nanogpt-companion/{__version__}"},
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
    )
    app[keys.HTTP_SESSION] = session
    app[keys.NANOGPT] = NanoGPTClient(
        session,
        settings.upstream,
        request_timeout=settings.upstream_timeout,
        max_body_bytes=int(settings.max_upstream_body_mb * 1024 * 1024),
    )
    yield
    await session.close()


async def _store(app: web.Application) -> AsyncIterator[None]:
    store = Store(app[keys.SETTINGS].database_path)
    await store.open()
    app[keys.STORE] = store
    yield
    await store.close()


async def _services(app: web.Application) -> AsyncIterator[None]:
    settings = app[keys.SETTINGS]
    users = app[keys.USERS]
    bus = app[keys.BUS]

    doctor: DoctorService | None = None  # set below; catalogue refreshes start only after that

    def publish_catalog(fingerprint: str, snapshot: CatalogSnapshot, diff: CatalogDiff) -> None:
        event = {"fetched_at": snapshot.fetched_at, "count": len(snapshot.entries), "diff": diff.as_json()}
        for handle in users.handles():
            key = users.cached_key(handle)
            if key is not None and key.fingerprint == fingerprint:
                bus.publish(handle, "catalog", event)
        if doctor is not None and (diff.removed or len(diff.added) < len(snapshot.entries)):
            # A first load (everything "added") is the start-up scan's job, not news.
            doctor.on_catalog_refresh(fingerprint, diff)

    catalog = CatalogService(
        app[keys.NANOGPT], app[keys.STORE], ttl=settings.catalog_ttl, on_refresh=publish_catalog
    )
    account = AccountService(
        app[keys.NANOGPT],
        app[keys.STORE],
        bus,
        key_for=users.key_for,
        poll_interval=settings.account_poll_interval,
        low_balance_usd=settings.low_balance_usd,
        min_refresh_interval=settings.account_refresh_interval,
    )
    providers = ProviderService(app[keys.NANOGPT], ttl=settings.catalog_ttl)
    app[keys.CATALOG] = catalog
    app[keys.ACCOUNT] = account
    app[keys.PROVIDERS] = providers
    spend = SpendService(
        ledger=SpendLedger(app[keys.STORE]),
        account=account,
        catalog=catalog,
        bus=bus,
        key_for=users.key_for,
        users_of_key=users.handles_with_key,
        settle=settings.spend_poll_settle,
        min_interval=settings.spend_poll_min_interval,
        subscriber_min_interval=settings.spend_poll_subscriber_interval,
    )
    account.add_reading_listener(spend.on_reading)
    app[keys.SPEND] = spend
    if users.data_root is not None:
        doctor = DoctorService(
            users=users,
            store=app[keys.STORE],
            bus=bus,
            catalog=catalog,
            account=account,
            settings=settings,
            providers=providers,
        )
    app[keys.DOCTOR] = doctor

    def version_for(handle: str) -> STVersion:
        return doctor.st_version(handle) if doctor is not None else UNKNOWN_VERSION

    app[keys.KEY_SLOTS] = KeySlotService(
        users=users, store=app[keys.STORE], key_for=users.key_for, version_for=version_for
    )

    def keys_changed(active: set[str]) -> None:
        catalog.retain(active)
        account.retain(active)

    users.on_keys_change(keys_changed)
    await users.refresh_async()
    await asyncio.to_thread(app[keys.PLUGIN_LINK].sync)
    _describe_setup(settings, users)
    # Everything alive now (modules, pydantic schemas, the app) lives as long as the process. Moving it
    # out of the cyclic GC's view keeps a full collection triggered mid-refresh (adopting a round's new
    # entries allocates a lot) from walking all of it: that walk was the longest event-loop stall under load.
    gc.freeze()
    tasks: list[asyncio.Task[Any]] = []

    def start(coro: Coroutine[Any, Any, Any], name: str) -> None:
        tasks.append(asyncio.create_task(_supervised(coro, name), name=name))

    start(catalog.run(active_keys=users.active_fingerprints), "catalog-refresh")
    start(account.run(users.handles), "account-poll")
    await spend.start()
    start(spend.run(), "spend-ledger")
    if users.data_root is not None:
        start(_rescan_users(users, doctor, app[keys.PLUGIN_LINK]), "user-rescan")
    watcher: SettingsWatcher | None = None
    if doctor is not None:
        await doctor.start()
        if settings.watch:
            watcher = SettingsWatcher(users, doctor, debounce_ms=settings.watch_debounce_ms)
            start(watcher.run(), "settings-watcher")
    yield
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await spend.close()
    await catalog.close()
    await account.close()
    await providers.close()
    if doctor is not None:
        await doctor.close()
    gc.unfreeze()  # an app that is gone must not pin what was alive when it started (tests run many)


async def _supervised(coro: Coroutine[Any, Any, Any], name: str) -> None:
    """Background loops must not die silently: log the crash (the loop itself retries its own errors)."""
    try:
        await coro
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("background task %s stopped unexpectedly", name)


async def _rescan_users(users: UserRegistry, doctor: DoctorService | None, link: PluginLink) -> None:
    while True:
        await asyncio.sleep(USER_RESCAN_INTERVAL)
        # The plugin may have been installed (or its link file removed) since the last round.
        await asyncio.to_thread(link.sync)
        with contextlib.suppress(OSError):
            added, _ = await users.refresh_async()
            if doctor is not None:
                for handle in added:
                    await doctor.check_user(handle)


async def _signal_stop(app: web.Application) -> None:
    app[keys.STOPPING].set()


def _describe_setup(settings: Settings, users: UserRegistry) -> None:
    """Say plainly what the service has and what it is missing, once, at start."""
    if users.data_root is None:
        token_file = users.token_file(users.handles()[0]) if users.handles() else None
        log.info("no SillyTavern directory given: catalogue and account only (no settings doctor)")
        log.info("API token for scripts: %s", token_file)
    else:
        log.info("SillyTavern data root: %s (%d users)", users.data_root, len(users.handles()))
        if not users.handles() and users.data_root.is_dir():  # a missing one was reported by the registry
            # Normal before ST's first start finishes: not a warning. Users are picked up as they appear.
            log.info(
                "no SillyTavern users yet (no <dataRoot>/<handle>/settings.json); "
                "each is picked up when SillyTavern creates it"
            )
    if settings.api_key is not None:
        log.info("using the NanoGPT key from the configuration for every user")
    elif users.data_root is None:
        log.warning(
            "no NanoGPT key: set NANOGPT_API_KEY to see balance and quota (the catalogue works without)"
        )
