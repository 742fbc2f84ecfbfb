"""`flask` commands. Each step commits once, like a request."""

from __future__ import annotations

import secrets

import click
from flask import Flask, current_app

from crowdfund.accounts import services as accounts
from crowdfund.accounts.models import Role
from crowdfund.errors import DomainError


def _session():  # type: ignore[no-untyped-def]
    return current_app.extensions["crowdfund.sessionmaker"]()


def register_cli(app: Flask) -> None:
    users = click.Group("users", help="Manage accounts.")

    @users.command("create")
    @click.argument("email")
    @click.option("--role", "role", type=click.Choice([r.value for r in Role]), default=Role.FAN.value)
    @click.option("--studio", "studio_name", help="Studio organisation (required for --role studio).")
    @click.option("--name", "display_name", default=None, help="Display name (default: the e-mail's local part).")
    @click.option("--password", default=None, help="Password; a random one is generated and printed if omitted.")
    def create_user(email: str, role: str, studio_name: str | None, display_name: str | None,
                    password: str | None) -> None:
        """Create an account with ROLE (fan, studio, finance, admin)."""
        if role == Role.STUDIO and not studio_name:
            raise click.UsageError("--role studio needs --studio NAME")
        generated = password is None
        password = password or secrets.token_urlsafe(12)
        with _session() as session:
            try:
                stored_roles = (Role(role),) if role != Role.STUDIO else ()
                user = accounts.create_user(session, email, password, display_name or email.split("@")[0],
                                            roles=stored_roles)
                if role == Role.STUDIO:
                    accounts.set_studio(session, user, accounts.get_or_create_studio(session, studio_name or ""))
                session.commit()
            except DomainError as exc:
                raise click.ClickException(exc.message) from exc
        click.echo(f"Created {user.email} with role {role}.")
        if generated:
            click.echo(f"Password: {password}")

    app.cli.add_command(users)

    from crowdfund.demo import demo_command

    app.cli.add_command(demo_command)
