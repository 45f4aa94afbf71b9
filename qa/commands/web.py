"""``qa serve`` (the web UI) and ``qa users`` (accounts for it)."""

from __future__ import annotations

import sys

import click

from ..permissions import USER_ROLES
from .common import App, domain_errors, echo_table, pass_app

CLI_ACTOR = "cli"


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return click.prompt("Password", hide_input=True, confirmation_prompt=True)


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--secure-cookies", is_flag=True,
              help="Mark the session cookie Secure and send HSTS (set this when the UI is served over HTTPS).")
@click.option("--forwarded-allow-ips", metavar="IPS",
              help="Behind a reverse proxy: its address(es), comma-separated; the client address it forwards "
                   "(X-Forwarded-For) is then used, e.g. by the login limit.")
@pass_app
@domain_errors
def serve(app: App, host: str, port: int, secure_cookies: bool, forwarded_allow_ips: str | None) -> None:
    """Run the web UI for inspectors, seniors, auditors and admins. Create accounts first with
    ``qa users add``."""
    import uvicorn

    from ..web import create_app

    web = create_app(app.settings, session_factory=app.session_factory, secure_cookies=secure_cookies)
    click.echo(f"qa web UI on http://{host}:{port}/  (Ctrl-C stops it)")
    uvicorn.run(web, host=host, port=port, log_level="warning", proxy_headers=bool(forwarded_allow_ips),
                forwarded_allow_ips=forwarded_allow_ips or None)


@click.group("users")
def users_group() -> None:
    """Accounts of the web UI (roles: inspector, senior, auditor, admin)."""


@users_group.command("add")
@click.argument("username")
@click.option("--role", required=True, type=click.Choice(USER_ROLES))
@click.option("--name", "display_name", help="Display name, e.g. 张敏.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_app
@domain_errors
def users_add(app: App, username: str, role: str, display_name: str | None, password_stdin: bool) -> None:
    """Create an account."""
    from ..review import users
    from ..storage import write_session

    password = _read_password(password_stdin)
    with write_session(app.session_factory) as session:
        users.create_user(session, CLI_ACTOR, username, role, password, display_name)
        session.commit()
    click.echo(f"user {username} ({role}) created")


@users_group.command("disable")
@click.argument("username")
@pass_app
@domain_errors
def users_disable(app: App, username: str) -> None:
    """Disable an account; its open web sessions end at their next request."""
    from ..review import users
    from ..storage import write_session

    with write_session(app.session_factory) as session:
        users.set_active(session, CLI_ACTOR, username, False)
        session.commit()
    click.echo(f"user {username} disabled")


@users_group.command("enable")
@click.argument("username")
@pass_app
@domain_errors
def users_enable(app: App, username: str) -> None:
    """Re-enable a disabled account."""
    from ..review import users
    from ..storage import write_session

    with write_session(app.session_factory) as session:
        users.set_active(session, CLI_ACTOR, username, True)
        session.commit()
    click.echo(f"user {username} enabled")


@users_group.command("passwd")
@click.argument("username")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin.")
@pass_app
@domain_errors
def users_passwd(app: App, username: str, password_stdin: bool) -> None:
    """Set a new password (ends the user's open web sessions)."""
    from ..review import users
    from ..storage import write_session

    password = _read_password(password_stdin)
    with write_session(app.session_factory) as session:
        users.set_password(session, CLI_ACTOR, username, password)
        session.commit()
    click.echo(f"password of {username} changed")


@users_group.command("list")
@pass_app
@domain_errors
def users_list(app: App) -> None:
    """List accounts."""
    from ..review import users

    with app.session_factory() as session:
        rows = [(u.username, u.display_name or "", u.role, "active" if u.active else "disabled")
                for u in users.list_users(session)]
    echo_table(rows, ("username", "name", "role", "status"))


def register(group: click.Group) -> None:
    group.add_command(serve)
    group.add_command(users_group)
