"""Admin accounts: argon2 password hashes and a login rate limit.  No Flask here."""

from __future__ import annotations

import re
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlite_utils import Database

from aggregator.storage import admin as admin_store
from aggregator.storage import write_transaction

__all__ = ["AccountError", "LoginResult", "check_login", "set_password", "valid_name"]

_HASHER = PasswordHasher()
_NAME = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# A fixed hash to verify against when the account does not exist, so that a
# wrong name takes as long as a wrong password.
_DUMMY = _HASHER.hash("not a real password")

WINDOW_SECONDS = 15 * 60
# Failed logins allowed per 15 minutes: to one account from one address (a guesser)...
MAX_FAILURES_PER_NAME_AND_ADDRESS = 5
# ...from one address to any account...
MAX_FAILURES_PER_ADDRESS = 20
# ...and to one account from everywhere (guessers spread over many addresses), which
# does not hold a browser the account has logged in from before: five wrong guesses
# from anywhere used to lock the admins themselves out for 15 minutes.
MAX_FAILURES_PER_NAME = 100


class AccountError(ValueError):
    """A bad account name or password."""


@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str = ""
    limited: bool = False


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name))  # (match() let "dave\n" through: "$" matches before it)


def set_password(db: Database, name: str, password: str, now: float) -> None:
    """Create the account or change its password."""
    if not valid_name(name):
        raise AccountError("account names are 1-64 letters, digits or . _ @ -")
    if len(password) < 10:
        raise AccountError("passwords need at least 10 characters")
    if len(password) > 1024:
        raise AccountError("passwords are at most 1,024 characters")
    with write_transaction(db):
        admin_store.set_hash(db, name, _HASHER.hash(password), now)


def remove_account(db: Database, name: str) -> bool:
    """Remove an admin account; False if there is none of that name.  Its sessions end:
    their stamp no longer matches any account."""
    with write_transaction(db):
        return admin_store.remove(db, name)


def check_login(
    db: Database, name: str, password: str, remote: str, now: float, *, known_browser: bool = False
) -> LoginResult:
    """Verify a login, at most a few failures per account and address per 15 minutes.

    ``known_browser``: the request comes from a browser that has logged into this
    account before (the web app's signed cookie says so); the limit on failures to the
    account from all addresses does not apply to it, so guessers elsewhere cannot lock
    the account's admins out.
    """
    name = name.strip()[:200]
    # The attempt counts as a failure from before it is checked, in the transaction that
    # checks the limits: guesses sent in parallel each saw the others uncounted (40 at
    # once made 38 tries against a limit of 5).
    with write_transaction(db):
        failed = admin_store.failures_since(db, name=name, remote=remote, since=now - WINDOW_SECONDS)
        if (
            failed.by_name_and_remote >= MAX_FAILURES_PER_NAME_AND_ADDRESS
            or failed.by_remote >= MAX_FAILURES_PER_ADDRESS
            or (failed.by_name >= MAX_FAILURES_PER_NAME and not known_browser)
        ):
            return LoginResult(False, "Too many failed logins. Try again in 15 minutes.", limited=True)
        attempt = admin_store.record_attempt(db, name, remote, now, False)
    stored = admin_store.get_hash(db, name) if valid_name(name) else None
    ok = False
    try:
        ok = _HASHER.verify(stored or _DUMMY, password) and stored is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        ok = False
    if ok:
        with write_transaction(db):
            admin_store.attempt_succeeded(db, attempt)
            if stored is not None and _HASHER.check_needs_rehash(stored):
                admin_store.set_hash(db, name, _HASHER.hash(password), now)
    return LoginResult(ok, "" if ok else "Wrong account name or password.")
