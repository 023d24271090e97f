"""``python -m coordinator.users`` in-process: the password is the first line of stdin
without its line end only (spaces and other characters are part of it), a terminal is asked
with a prompt naming the user, and ``--help`` says what the command does."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from common.auth import TokenStore
from common.errors import TooManyRequests
from coordinator.users import main, verify_password


def run(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], argv: list[str],
        stdin: io.StringIO) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", stdin)
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("password", ["pw  ", " pw", "pwX", "p w\t", "XpwX"])
def test_only_the_line_end_is_removed_from_the_password(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        password: str) -> None:
    code, out, err = run(monkeypatch, capsys, ["bob", "--iterations", "1000"],
                         io.StringIO(password + "\r\n"))
    assert (code, err) == (0, "")
    encoded = out.rstrip("\n").partition(":")[2]
    assert verify_password(password, encoded)
    assert not verify_password(password.strip(" \tX"), encoded)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_is_asked_with_a_prompt_naming_the_user(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A pseudo-terminal cannot be given to getpass in-process (it opens /dev/tty): its
    function is replaced, the branch that calls it is real."""
    prompts: list[str] = []

    def getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return "from the terminal "

    monkeypatch.setattr("getpass.getpass", getpass)
    code, out, _ = run(monkeypatch, capsys, ["carol", "--iterations", "1000"],
                       Terminal("not read\n"))
    assert code == 0 and prompts == ["password for carol: "]
    assert verify_password("from the terminal ", out.rstrip("\n").partition(":")[2])


def test_help_says_what_the_command_does(monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # argparse wraps at the terminal's width
    code, out, _ = run(monkeypatch, capsys, ["--help"], io.StringIO(""))
    assert code == 0
    lines = [line.strip() for line in out.splitlines()]
    assert lines[0] == "usage: python -m coordinator.users [-h] [--iterations ITERATIONS] name"
    assert "Make a users_file line; reads the password from stdin." in lines
    (name,) = [line for line in lines if line.startswith("name ")]
    assert name.split(None, 1) == ["name", "user name (no ':')"]


def test_wrong_passwords_checked_at_once_from_one_address_stop_at_the_limit(
        tmp_path: Path) -> None:
    """Checks still running count against their address: limit + 2 wrong passwords sent at
    once from one address get `limit` checks, the others 429 at once; another address is
    not affected."""
    from coordinator.users import ClientAuthenticator, FailureLimiter, UserStore
    from tests.coordinator.test_users_units import basic, request, users_file

    limiter = FailureLimiter(limit=3)
    auth = ClientAuthenticator(TokenStore(None),
                               UserStore.open(str(users_file(tmp_path, alice="right"))),
                               limiter)

    async def attempt(address: str) -> str:
        try:
            caller = await auth.authenticate(request(basic("alice", "wrong"), address))
        except TooManyRequests:
            return "429"
        return "checked" if caller is None else "passed"

    async def burst() -> list[str]:
        return list(await asyncio.gather(*(attempt("10.0.0.1") for _ in range(5)),
                                         attempt("10.0.0.2")))

    assert asyncio.run(burst()) == ["checked"] * 3 + ["429"] * 2 + ["checked"]
