"""Command line: ``serve`` | ``doctor`` | ``install-extension`` | ``install-service`` | ``catalog`` |
``spend``.

Thin: parse, then call in."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pydantic import ValidationError

from nanogpt_companion import __version__
from nanogpt_companion.config import DEFAULT_PORT, Settings, load_settings

log = logging.getLogger("nanogpt_companion")

# doctor: some checks could not run (NanoGPT unreachable) and nothing else needs attention. 1 stays "problems
# found", 2 "cannot run at all", so scripts can tell "all clear" from "not fully checked".
EXIT_INCOMPLETE = 3


def _add_common(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--sillytavern", type=Path, metavar="DIR", help="SillyTavern install directory")
    where.add_argument(
        "--data-root",
        type=Path,
        metavar="DIR",
        help="SillyTavern's data folder, the one holding a folder per user (instead of --sillytavern; "
        "by default it is dataRoot from the SillyTavern folder's config.yaml)",
    )
    parser.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    parser.add_argument(
        "--upstream", metavar="URL", help="NanoGPT API base (default https://nano-gpt.com/api)"
    )
    parser.add_argument("--state-dir", type=Path, metavar="DIR", help="where the SQLite store lives")
    parser.add_argument("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nanogpt-companion",
        description="NanoGPT Companion for SillyTavern: catalogue, balance and quota, settings doctor.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the companion service")
    _add_common(serve)
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help=f"port to bind (default {DEFAULT_PORT})")
    serve.add_argument(
        "--allow-origin",
        action="append",
        dest="allow_origins",
        metavar="ORIGIN",
        help="extra browser origin allowed by CORS (repeatable)",
    )
    serve.add_argument(
        "--allow-host",
        action="append",
        dest="allow_hosts",
        metavar="NAME",
        help="extra Host name accepted, e.g. a LAN address you bind to (repeatable)",
    )
    serve.add_argument("--no-watch", action="store_true", help="do not watch SillyTavern's settings files")
    serve.add_argument(
        "--log-file", type=Path, metavar="FILE", help="append the log to FILE instead of stderr"
    )

    doctor = sub.add_parser("doctor", help="check SillyTavern's settings for NanoGPT problems")
    _add_common(doctor)
    doctor.add_argument("--user", metavar="HANDLE", help="only this ST user")
    doctor.add_argument("--fix", action="store_true", help="apply the fixes (safely; undo via the service)")
    doctor.add_argument("--json", action="store_true", help="machine-readable output")
    doctor.add_argument("--offline", action="store_true", help="do not contact NanoGPT (fewer checks)")

    install = sub.add_parser("install-extension", help="install the SillyTavern UI extension")
    install.add_argument(
        "--sillytavern", type=Path, metavar="DIR", required=True, help="SillyTavern directory"
    )
    scope = install.add_mutually_exclusive_group()
    scope.add_argument("--user", metavar="HANDLE", help="install for this ST user (default: default-user)")
    scope.add_argument("--global", dest="global_install", action="store_true", help="install for all users")
    install.add_argument("--link", action="store_true", help="symlink instead of copying (development)")
    install.add_argument("--uninstall", action="store_true", help="remove what was installed")
    install.add_argument(
        "--server-plugin",
        action="store_true",
        help="also install the ST server plugin (for ST opened from another device)",
    )
    install.add_argument(
        "--enable-server-plugins",
        action="store_true",
        help="set enableServerPlugins: true in ST's config.yaml (a backup is made first)",
    )
    install.add_argument(
        "--no-autostart",
        action="store_true",
        help="with --server-plugin: do not let SillyTavern start the service when it starts",
    )
    install.add_argument(
        "--force",
        action="store_true",
        help="replace an existing folder of that name that this installer did not create",
    )

    service = sub.add_parser(
        "install-service",
        help="run the service at log-in (systemd user unit, macOS LaunchAgent, Windows scheduled task)",
    )
    service_where = service.add_mutually_exclusive_group()
    service_where.add_argument("--sillytavern", type=Path, metavar="DIR", help="SillyTavern directory")
    service_where.add_argument("--data-root", type=Path, metavar="DIR", help="SillyTavern data root instead")
    service.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML configuration file for the service"
    )
    service.add_argument(
        "--uninstall", action="store_true", help="stop the service and remove what was installed"
    )

    catalog = sub.add_parser("catalog", help="print the NanoGPT model catalogue")
    _add_common(catalog)
    catalog.add_argument("--tier", choices=["v1", "subscription", "paid", "personalized"])
    catalog.add_argument("--query", "-q", metavar="TEXT", help="filter by id, name or vendor")
    catalog.add_argument("--sort", choices=["name", "price", "context", "newest"], default="name")
    catalog.add_argument("--json", action="store_true", help="machine-readable output")

    spend = sub.add_parser(
        "spend",
        help="what NanoGPT cost per day, chat and model (read-only: reads the companion's database)",
    )
    spend.add_argument("--config", type=Path, metavar="FILE", help="TOML configuration file")
    spend.add_argument("--state-dir", type=Path, metavar="DIR", help="where the SQLite store lives")
    spend.add_argument("--user", metavar="HANDLE", help="only this ST user (default: every user)")
    spend.add_argument(
        "--days", type=int, default=30, metavar="N", help="how far back (default 30, max 3650)"
    )
    out = spend.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="every generation of those days as CSV on stdout")
    out.add_argument("--json", action="store_true", help="the summary as JSON")
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(
        args.config,
        sillytavern=args.sillytavern,
        data_root=args.data_root,
        upstream=args.upstream,
        state_dir=args.state_dir,
        log_level=args.log_level,
        **extra,
    )


def _configure_logging(
    level: str, log_file: Path | None = None, *, reported_by_command: Sequence[str] = ()
) -> None:
    """Log to stderr (or ``log_file``). Below DEBUG, other libraries' routine INFO (watchfiles announces
    every batch of file changes it sees, i.e. every ST save) is not ours to repeat. ``reported_by_command``:
    loggers whose warnings a one-shot command reports itself (as ``error:``/``note:``), so they are not
    said twice."""
    numeric = getattr(logging, level.upper(), logging.INFO)
    handler: logging.Handler = (
        logging.FileHandler(log_file, encoding="utf-8") if log_file else logging.StreamHandler(sys.stderr)
    )
    logging.basicConfig(
        level=numeric,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S" if log_file else "%H:%M:%S",
        handlers=[handler],
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    if numeric > logging.DEBUG:
        logging.getLogger("watchfiles").setLevel(logging.WARNING)
        for name in reported_by_command:
            logging.getLogger(name).setLevel(logging.ERROR)
    from nanogpt_companion.web.logs import install_log_filters  # noqa: PLC0415 - keep `--help` fast

    install_log_filters()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "doctor":
            return asyncio.run(_doctor(args))
        if args.command == "install-extension":
            return _install(args)
        if args.command == "install-service":
            return _install_service(args)
        if args.command == "catalog":
            return asyncio.run(_catalog(args))
        if args.command == "spend":
            return asyncio.run(_spend(args))
    except ValidationError as exc:
        first = exc.errors()[0]
        print(f"error: invalid setting {'.'.join(map(str, first['loc']))}: {first['msg']}", file=sys.stderr)
        return 2
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 2


def _serve(args: argparse.Namespace) -> int:
    from aiohttp import web  # noqa: PLC0415 - keep `--help` and the other commands fast

    from nanogpt_companion.memory import tune_malloc_for_idle  # noqa: PLC0415
    from nanogpt_companion.web.app import init_app  # noqa: PLC0415

    settings = _settings(
        args,
        host=args.host,
        port=args.port,
        allow_origins=args.allow_origins,
        allow_hosts=args.allow_hosts,
        watch=False if args.no_watch else None,
    )
    if args.log_file is not None:
        args.log_file.parent.mkdir(parents=True, exist_ok=True)
    _configure_logging(settings.log_level, args.log_file)
    if settings.sillytavern is not None and not settings.sillytavern.is_dir():
        raise ValueError(f"SillyTavern directory not found: {settings.sillytavern}")
    if settings.data_root is not None and not settings.data_root.is_dir():
        raise ValueError(f"SillyTavern data root not found: {settings.data_root}")
    from nanogpt_companion.autostart import running_service  # noqa: PLC0415

    existing = running_service(settings.public_url)
    if existing is not None:
        print(
            f"error: the NanoGPT Companion service already runs at {settings.public_url} "
            f"(version {existing.get('version', '?')}); not starting a second one. SillyTavern's server "
            "plugin or `nanogpt-companion install-service` may have started it.",
            file=sys.stderr,
        )
        return 1
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tune_malloc_for_idle()  # before any worker thread: see memory.py (idle RSS)
    app = init_app(settings)
    log.info("NanoGPT Companion %s on %s (upstream %s)", __version__, settings.public_url, settings.upstream)
    web.run_app(
        app,
        host=settings.host,
        port=settings.port,
        print=None,
        access_log=None,
        shutdown_timeout=5.0,
        handle_signals=True,
        # aiohttp has no separate header-read timeout; a short keep-alive bounds idle and dribbling sockets.
        keepalive_timeout=15.0,
    )
    log.info("stopped")
    return 0


@asynccontextmanager
async def _offline_services(settings: Settings, *, offline: bool = False) -> AsyncIterator[dict[str, Any]]:
    from nanogpt_companion.account import AccountService  # noqa: PLC0415
    from nanogpt_companion.catalog import CatalogService  # noqa: PLC0415
    from nanogpt_companion.doctor_service import DoctorService  # noqa: PLC0415
    from nanogpt_companion.events import EventBus  # noqa: PLC0415
    from nanogpt_companion.nanogpt.client import NanoGPTClient  # noqa: PLC0415
    from nanogpt_companion.providers import ProviderService  # noqa: PLC0415
    from nanogpt_companion.store import Store  # noqa: PLC0415
    from nanogpt_companion.users import UserRegistry  # noqa: PLC0415
    from nanogpt_companion.web.app import resolve_data_root  # noqa: PLC0415

    data_root, _ = resolve_data_root(settings)
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    async with aiohttp.ClientSession() as session:
        client = NanoGPTClient(
            session, settings.upstream, request_timeout=min(settings.upstream_timeout, 15.0)
        )
        store = Store(settings.database_path)
        await store.open()
        try:
            users = UserRegistry(
                data_root=data_root,
                state_dir=settings.state_dir,
                public_url=settings.public_url,
                config_key=settings.api_key.get_secret_value() if settings.api_key else None,
                write_token_files=False,  # only `serve` writes them: this command only reads
            )
            users.refresh()
            bus = EventBus()
            catalog = CatalogService(client, store, ttl=settings.catalog_ttl)
            account = AccountService(client, store, bus, key_for=users.key_for)
            providers = ProviderService(client, ttl=settings.catalog_ttl)
            doctor = (
                DoctorService(
                    users=users,
                    store=store,
                    bus=bus,
                    catalog=catalog,
                    account=account,
                    settings=settings,
                    offline=offline,
                    providers=providers,
                )
                if data_root is not None
                else None
            )
            yield {"users": users, "catalog": catalog, "account": account, "doctor": doctor, "client": client}
            await catalog.close()
            await providers.close()
        finally:
            await store.close()


async def _service_running(url: str) -> bool:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=1)) as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _running_service_url(settings: Settings, users: Any) -> str:
    """Where a running service listens: the URL it wrote into the users' token files (it may run on
    another port than this command's settings say), else the configured one."""
    from nanogpt_companion.sillytavern.tokenfile import read_service_url  # noqa: PLC0415

    for handle in users.handles():
        user = users.get(handle)
        url = read_service_url(user.paths) if user is not None and user.paths is not None else None
        if url:
            return url
    return settings.public_url


async def _catalogue_gaps(
    services: dict[str, Any], handles: Sequence[str], *, offline: bool
) -> dict[str, str]:
    """Per user, why the checks that need NanoGPT's model list cannot run (no entry: they can).

    Fetched here, before the doctor looks, so the doctor finds the catalogue in memory and the command can
    say plainly which checks were skipped instead of reporting "no problems" for checks that never ran.
    """
    from nanogpt_companion.catalog import CatalogUnavailable  # noqa: PLC0415
    from nanogpt_companion.nanogpt.errors import NanoGPTError  # noqa: PLC0415

    catalog, users = services["catalog"], services["users"]
    gaps: dict[str, str] = {}
    said: set[str] = set()
    for handle in handles:
        key = await users.key_for(handle)
        if offline:
            if await catalog.stored(key) is None:
                gaps[handle] = "--offline, and no catalogue was saved by an earlier run"
            continue
        try:
            view = await catalog.get(key)
        except CatalogUnavailable as exc:
            gaps[handle] = f"NanoGPT's model list could not be fetched: {exc}"
            continue
        if view.stale:
            # A catalogue saved by an earlier run: try for a current one, but one from the store beats none.
            try:
                await catalog.refresh(key)
            except NanoGPTError as exc:
                saved = time.strftime("%Y-%m-%d %H:%M", time.localtime(view.snapshot.fetched_at))
                note = f"note: {exc} Checked against NanoGPT's model list as saved on {saved}."
                if note not in said:
                    said.add(note)
                    print(note, file=sys.stderr)
    return gaps


async def _doctor(args: argparse.Namespace) -> int:
    settings = _settings(args)
    _configure_logging(
        settings.log_level if args.log_level else "WARNING",
        reported_by_command=() if args.log_level else ("nanogpt_companion.catalog",),
    )
    if settings.sillytavern is None and settings.data_root is None:
        print("error: give --sillytavern DIR (or --data-root DIR)", file=sys.stderr)
        return 2
    # A mistyped path must not read as "no users, no problems" (exit 0): say so, as `serve` does.
    if settings.sillytavern is not None and not settings.sillytavern.is_dir():
        raise ValueError(f"SillyTavern directory not found: {settings.sillytavern}")
    if settings.data_root is not None and not settings.data_root.is_dir():
        raise ValueError(f"SillyTavern data root not found: {settings.data_root}")
    async with _offline_services(settings, offline=args.offline) as services:
        users, doctor = services["users"], services["doctor"]
        handles = [args.user] if args.user else users.handles()
        if args.user and args.user not in users.handles():
            print(
                f"error: no SillyTavern user {args.user!r} (found: {', '.join(users.handles()) or 'none'})",
                file=sys.stderr,
            )
            return 2
        service_url = _running_service_url(settings, users)
        running = args.fix and await _service_running(service_url)
        gaps = await _catalogue_gaps(services, handles, offline=args.offline)
        reports: dict[str, Any] = {}
        for handle in handles:
            await doctor.check_user(handle, act=False)
            token = users.get(handle).token
            if args.fix and running and token:
                print(
                    f"note: the companion service is running; fixing {handle} through it so an open ST tab "
                    "gets the fix live instead of having it overwritten.",
                    file=sys.stderr,
                )
                reports[handle] = {"results": await _fix_via_service(service_url, token)}
            elif args.fix and running:
                print(
                    f"error: the companion service at {service_url} runs but has not written {handle}'s "
                    "token file yet; try again in a few seconds.",
                    file=sys.stderr,
                )
                return 2
            elif args.fix:
                print(
                    f"warning: fixing {handle}'s files directly. If a SillyTavern tab is open for {handle}, "
                    "reload it now, or ST will overwrite the fix on its next save.",
                    file=sys.stderr,
                )
                reports[handle] = {"results": [r.as_json() for r in await doctor.apply(handle, None)]}
            reports[handle] = {
                **(await doctor.report(handle)),
                **reports.get(handle, {}),
                "skipped": _skipped(gaps.get(handle)),
            }
    if args.json:
        sys.stdout.write(orjson.dumps(reports, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_doctor(reports)
    has_problems = any(f["severity"] != "info" for r in reports.values() for f in r["findings"])
    if has_problems and not args.fix:
        return 1
    # Checks that could not run are not "no problems": unless --offline asked for exactly that, say so.
    incomplete = not args.offline and any(r["skipped"] for r in reports.values() if not r.get("error"))
    return EXIT_INCOMPLETE if incomplete else 0


def _skipped(reason: str | None) -> dict[str, Any] | None:
    from nanogpt_companion.doctor.rules.meta import RULE_META, RULE_ORDER  # noqa: PLC0415

    if reason is None:
        return None
    return {"rules": [r for r in RULE_ORDER if RULE_META[r].needs_catalogue], "reason": reason}


async def _fix_via_service(url: str, token: str) -> list[dict[str, Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/doctor/fix",
            json={"all": True},
            headers={"Authorization": f"Bearer {token}"},
        ) as response,
    ):
        data = await response.json()
        return list(data.get("results", []))


def _print_doctor(reports: dict[str, Any]) -> None:
    marks = {"error": "✖", "warning": "!", "info": "i"}
    for handle, report in reports.items():
        version = report.get("st_version") or "unknown version"
        print(f"== {handle} (SillyTavern {version})")
        if report.get("error"):
            print(f"   could not check: {report['error']['message']}")
        skipped = report.get("skipped")
        if not report["findings"] and not report.get("error"):
            print("   no problems found" + (" by the checks that ran" if skipped else ""))
        for finding in report["findings"]:
            fix = "fixable" if finding["fixable"] else "advice"
            print(
                f"   {marks.get(finding['severity'], '-')} {finding['title']}  [{finding['rule']}, {fix}, "
                f"{finding['policy']}]"
            )
            for line in textwrap.wrap(finding["explanation"], 92):
                print(f"       {line}")
            if finding.get("change"):
                cost = " (costs more per message: applied only on request)" if finding["raises_cost"] else ""
                print(f"       fix: {finding['change']}{cost}")
        for result in report.get("results", []):
            print(f"   -> {result['id']}: {result['status']} - {result['message']}")
        if skipped and not report.get("error"):
            note = (
                f"skipped {len(skipped['rules'])} checks that need NanoGPT's model list "
                f"({', '.join(skipped['rules'])}): {skipped['reason']}"
            )
            for line in textwrap.wrap(note, 95):
                print(f"   {line}")


async def _catalog(args: argparse.Namespace) -> int:
    from nanogpt_companion.catalog import CatalogUnavailable, filter_entries  # noqa: PLC0415
    from nanogpt_companion.domain import Tier  # noqa: PLC0415

    settings = _settings(args)
    _configure_logging(
        settings.log_level if args.log_level else "WARNING",
        reported_by_command=() if args.log_level else ("nanogpt_companion.catalog",),
    )
    async with _offline_services(settings) as services:
        users = services["users"]
        handle = users.handles()[0] if users.handles() else "_local"
        try:
            view = await services["catalog"].get(await users.key_for(handle))
        except CatalogUnavailable as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
    entries = filter_entries(
        view.snapshot.entries, tier=Tier(args.tier) if args.tier else None, query=args.query, sort=args.sort
    )
    if args.json:
        sys.stdout.buffer.write(b'{"models":' + view.snapshot.models_json(entries) + b"}\n")
        return 0
    for e in entries:
        price = (
            f"${e.prompt:.2f}/${e.completion:.2f}"
            if e.prompt is not None and e.completion is not None
            else "?"
        )
        sub = "SUB" if e.included else "   "
        ctx = f"{e.context_length // 1000}k" if e.context_length else "?"
        print(f"{sub} {e.id:<60} {price:>18} {ctx:>7}")
    print(f"{len(entries)} of {len(view.snapshot.entries)} models" + (" (stale)" if view.stale else ""))
    return 0


async def _spend(args: argparse.Namespace) -> int:
    """Reads the database only (opened read-only; nothing in ST's folders is touched, no token file is
    written, NanoGPT is not asked): what the service recorded is what is reported."""
    from nanogpt_companion.spend import views  # noqa: PLC0415
    from nanogpt_companion.spend.export import to_csv  # noqa: PLC0415
    from nanogpt_companion.spend.ledger import SpendLedger  # noqa: PLC0415
    from nanogpt_companion.store import Store, StoreError  # noqa: PLC0415

    if not 1 <= args.days <= 3650:
        raise ValueError("--days must be between 1 and 3650")
    settings = load_settings(args.config, state_dir=args.state_dir)
    _configure_logging("WARNING")
    store = Store(settings.database_path, read_only=True)
    try:
        await store.open()
    except StoreError as exc:
        print(f"no spend recorded: {exc}", file=sys.stderr)
        return 1
    try:
        if await store.schema_version() < 2:
            print("no spend recorded yet: the service has not run since the upgrade", file=sys.stderr)
            return 1
        ledger = SpendLedger(store)
        users = [args.user] if args.user else await ledger.users()
        now = time.time()
        if args.csv:
            rows = [r for handle in users for r in await ledger.rows(handle, now - args.days * 86400)]
            rows.sort(key=lambda r: (r.ts, r.id))
            tz = views.zone((await ledger.settings(users[0])).timezone if len(users) == 1 else "UTC")
            sys.stdout.buffer.write(to_csv(rows, tz).encode())  # bytes: the CSV's own CRLF, untranslated
            return 0
        summaries: dict[str, Any] = {}
        for handle in users:
            user_settings = await ledger.settings(handle)
            tz = views.zone(user_settings.timezone)
            rows = await ledger.rows(handle, views.overview_start(tz, now, args.days))
            summaries[handle] = views.overview(
                rows,
                settings=user_settings,
                now=now,
                days=args.days,
                quota_mode=any(r.channel == "quota" for r in rows),
            )
    finally:
        await store.close()
    if args.json:
        sys.stdout.write(orjson.dumps(summaries, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        _print_spend(summaries, args.days)
    return 0


def _print_spend(summaries: dict[str, Any], days: int) -> None:
    if not summaries:
        print("no spend recorded yet")
    for handle, s in summaries.items():
        quota = s["mode"] == "quota"

        def amount(t: dict[str, Any], quota: bool = quota) -> str:
            text = f"${t['usd']:.4f}"
            if quota or t["quota"]:
                text += f" + {t['quota']:,.0f} quota tokens"
            marks = [
                m for m, on in (("estimated", t["estimated_usd"] > 0), ("approx.", t["approximate"])) if on
            ]
            return text + (f" ({', '.join(marks)})" if marks else "")

        print(f"== {handle} ({s['timezone']})")
        print(f"   today       {amount(s['today'])}   {s['today']['generations']} generations")
        print(f"   this month  {amount(s['month'])}   {s['month']['generations']} generations")
        for period in ("daily", "monthly"):
            b = s["budgets"][period]
            if b["budget_usd"] is not None:
                spent, limit = b["spent_usd"], b["budget_usd"]
                print(f"   {period} budget  ${spent:.2f} of ${limit:.2f} ({b['fraction']:.0%})")
        if s["window"]["outside_usd"] or s["window"]["outside_quota"]:
            print(f"   outside SillyTavern (last {days} days)  ${s['window']['outside_usd']:.4f}")
        for title, key in (
            ("top chats", "top_chats"),
            ("top characters", "top_characters"),
            ("top models", "top_models"),
        ):
            if s[key]:
                print(f"   {title} (last {days} days):")
                for entry in s[key]:
                    print(f"     {amount(entry):<44} {entry['label']}")


def _install(args: argparse.Namespace) -> int:
    from nanogpt_companion.installer import InstallError, install_extension  # noqa: PLC0415

    service_settings = load_settings()  # where the service will run (NANOGPT_COMPANION_* variables)
    try:
        report = install_extension(
            args.sillytavern,
            user=args.user,
            global_install=args.global_install,
            link=args.link,
            uninstall=args.uninstall,
            server_plugin=args.server_plugin,
            enable_server_plugins=args.enable_server_plugins,
            force=args.force,
            autostart=not args.no_autostart,
            state_dir=service_settings.state_dir,
            service_port=service_settings.port,
        )
    except InstallError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for line in report.lines:
        print(line)
    return 0


def _install_service(args: argparse.Namespace) -> int:
    from nanogpt_companion.autostart import serve_command, service_log_path  # noqa: PLC0415
    from nanogpt_companion.user_service import (  # noqa: PLC0415
        current_platform,
        install_service,
        plan_service,
        system_runner,
        uninstall_service,
    )

    extra: list[str] = []
    if args.data_root is not None:
        extra += ["--data-root", str(args.data_root.expanduser().resolve())]
    if args.config is not None:
        extra += ["--config", str(args.config.expanduser().resolve())]
    if args.sillytavern is not None and not args.sillytavern.is_dir():
        raise ValueError(f"SillyTavern directory not found: {args.sillytavern}")
    state_dir = load_settings(args.config).state_dir
    xdg = os.environ.get("XDG_CONFIG_HOME")
    plan = plan_service(
        current_platform(),
        serve_command(args.sillytavern, extra=extra),
        home=Path.home(),
        log=service_log_path(state_dir),
        xdg_config_home=Path(xdg) if xdg else None,
        uid=os.getuid() if hasattr(os, "getuid") else 0,
        state_dir=state_dir,
    )
    report = (uninstall_service if args.uninstall else install_service)(plan, system_runner)
    for line in report.lines:
        print(line)
    return 0 if report.ok else 1
