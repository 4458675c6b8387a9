"""``st.exposed``: an ST that listens beyond loopback without ST's own protections, with our plugin in it.

Why a settings doctor cares: the server plugin hands every logged-in ST user their own companion data
(account, balance, the settings the doctor edits). Whoever can use ST as a user can therefore use the
companion as that user. The plugin refuses hosts ST would not serve on purpose, but it cannot add a
password or an IP whitelist to ST. Advice only: these are ST's security settings in ``config.yaml``, which
the companion never edits.
"""

from __future__ import annotations

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.doctor.rules.meta import make_finding


def check_st_exposure(ctx: DoctorContext) -> list[Finding]:
    server = ctx.st_server
    if server is None or not server.plugin_installed or not server.listen:
        return []
    problems: list[str] = []
    fixes: list[str] = []
    if not server.password_protected and server.other_devices_allowed:
        if server.basic_auth:
            problems.append(
                "basic authentication still uses the sample user name and password from ST's template"
            )
            fixes.append("change basicAuthUser.username and basicAuthUser.password")
        elif server.accounts_enabled:
            names = ", ".join(server.users_without_password)
            problems.append(f"these ST users have no password: {names}")
            fixes.append("give every user a password (User Settings, or the Admin Panel for other users)")
        else:
            problems.append("nobody has to log in (user accounts are off and basic authentication is off)")
            fixes.append(
                "set enableUserAccounts: true and give every user a password, or set basicAuthMode: true "
                "with your own basicAuthUser credentials"
            )
    if not server.ip_whitelist_effective:
        problems.append("every IP address may connect (whitelistMode is off or the whitelist allows all)")
        fixes.append(
            "set whitelistMode: true and list the devices or networks you use under whitelist "
            "(for example 192.168.1.0/24)"
        )
    if not server.host_whitelist:
        problems.append("ST answers any host name, so a web page can reach it through DNS rebinding")
        fixes.append(
            "set hostWhitelist.enabled: true and list the names you open ST by under hostWhitelist.hosts "
            "(IP addresses and localhost are always allowed)"
        )
    if not problems:
        return []
    wide_open = not server.password_protected and not server.ip_whitelist_effective
    return [
        make_finding(
            "st.exposed",
            explanation=(
                "SillyTavern listens beyond this machine (listen: true) and the NanoGPT Companion server "
                "plugin is installed, so whoever can use ST as a user can use the companion as that user. In "
                f"{server.config_path}: " + "; ".join(problems) + ". To fix it in ST's config.yaml, then "
                "restart ST: " + "; ".join(fixes) + ". (This reads config.yaml only; ST's command-line flags "
                "and SILLYTAVERN_* environment variables can change these settings.)"
            ),
            severity="error" if wide_open else "warning",
            extra="|".join(sorted(problems)),
            details={
                "config": str(server.config_path),
                "password": server.password_protected,
                "whitelist": server.ip_whitelist_effective,
                "host_whitelist": server.host_whitelist,
                "users_without_password": list(server.users_without_password),
            },
        )
    ]
