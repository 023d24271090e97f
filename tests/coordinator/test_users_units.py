"""Who may call the coordinator, without a server: `coordinator.users` in-process.

Basic credentials parsing, the users file, the user store's cache and reload, and
`ClientAuthenticator` deciding on real Tornado requests. The same rules are checked over HTTP
in tests/coordinator/test_service_discovery.py and tests/hostile/; these are the fast checks
`make mutation` runs for every mutant. Hashes use 1,000 iterations (the minimum) to stay fast.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path

import pytest
from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

from common.auth import TokenStore
from common.errors import TooManyRequests
from coordinator.users import (
    CACHE_SIZE,
    ClientAuthenticator,
    FailureLimiter,
    UserStore,
    basic_credentials,
    hash_password,
    read_users,
    verify_password,
)

FAST = 1000


def basic(name: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()


def request(authorization: str | None = None, address: str | None = "10.0.0.1"
            ) -> HTTPServerRequest:
    headers = HTTPHeaders({"Host": "127.0.0.1"})
    if authorization is not None:
        headers["Authorization"] = authorization
    made = HTTPServerRequest(start_line=RequestStartLine("GET", "/api/plan", "HTTP/1.1"),
                             headers=headers)
    made.remote_ip = address  # type: ignore[assignment]
    return made


def users_file(tmp_path: Path, **users: str) -> Path:
    path = tmp_path / "users"
    path.write_text("".join(f"{name}:{hash_password(pw, iterations=FAST)}\n"
                            for name, pw in users.items()))
    return path


def test_basic_credentials_parse_only_a_valid_basic_header() -> None:
    assert basic_credentials(basic("alice", "pa:ss")) == ("alice", "pa:ss")
    assert basic_credentials("basic " + base64.b64encode(b"a:b").decode()) == ("a", "b")
    assert basic_credentials(" Basic YTpi") is None  # the scheme comes first
    assert basic_credentials("Basic  YTpi ") == ("a", "b")  # spaces around the value
    assert basic_credentials(None) is None and basic_credentials("") is None
    assert basic_credentials("Bearer YTpi") is None
    assert basic_credentials("Basic YTpi!") is None  # not base64
    assert basic_credentials("Basic " + base64.b64encode(b"\xff:x").decode()) is None
    assert basic_credentials("Basic " + base64.b64encode(b"nocolon").decode()) is None


def test_verify_password_and_bad_hashes() -> None:
    encoded = hash_password("right", iterations=FAST, salt=b"s" * 16)
    assert encoded.startswith(f"pbkdf2_sha256${FAST}${(b's' * 16).hex()}$")
    assert verify_password("right", encoded) and not verify_password("wrong", encoded)
    # the iteration count is part of the hash: the same salt and digest at 1000 do not match
    more = hash_password("right", iterations=FAST + 1, salt=b"s" * 16)
    assert not verify_password("right", more.replace(f"${FAST + 1}$", f"${FAST}$"))
    for bad in ("md5$1000$aa$" + "00" * 32, f"pbkdf2_sha256$999$aa${'00' * 32}",
                f"pbkdf2_sha256$1000$$${'00' * 32}", "pbkdf2_sha256$1000$aa$00",
                "pbkdf2_sha256$x$aa$00", "pbkdf2_sha256$1000$aa"):
        with pytest.raises(ValueError):
            verify_password("x", bad)


def test_users_file_skips_comments_and_blank_lines_and_names_a_bad_line(tmp_path: Path) -> None:
    line = f"alice:{hash_password('a', iterations=FAST)}"
    (tmp_path / "users").write_text(f"# who\n\n  {line}  \n")
    assert read_users(tmp_path / "users") == {"alice": line.split(":", 1)[1]}
    (tmp_path / "users").write_text(f"{line}\n:{line.split(':', 1)[1]}\n")
    with pytest.raises(ValueError, match=r"^line 2: expected name:"):
        read_users(tmp_path / "users")
    (tmp_path / "users").write_text("# nobody\n")
    with pytest.raises(ValueError, match="no user"):
        read_users(tmp_path / "users")


def test_store_caches_a_verified_pair_until_reload(tmp_path: Path) -> None:
    store = UserStore.open(str(users_file(tmp_path, alice="right")))
    assert store.enabled and not UserStore.open(None).enabled
    assert not store.cached("alice", "right")
    assert asyncio.run(store.check("alice", "right"))
    assert store.cached("alice", "right") and not store.cached("alice", "wrong")
    users_file(tmp_path, alice="new")
    assert store.reload()
    assert not store.cached("alice", "right")  # the cache is emptied on reload
    assert not asyncio.run(store.check("alice", "right"))
    assert asyncio.run(store.check("alice", "new"))


def test_store_cache_keeps_the_most_recently_used_pairs() -> None:
    store = UserStore("users", {"alice": hash_password("0", iterations=FAST)})

    async def fill() -> None:
        for i in range(CACHE_SIZE + 1):  # every one verified, then cached
            store.users = {"alice": hash_password(str(i), iterations=FAST)}
            assert await store.check("alice", str(i))

    asyncio.run(fill())
    assert len(store._verified) == CACHE_SIZE


def test_failed_reload_keeps_the_users_and_says_why(tmp_path: Path,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    path = users_file(tmp_path, alice="right")
    store = UserStore.open(str(path))
    path.write_text("alice:plaintext\n")
    with caplog.at_level(logging.ERROR, logger="coordinator.users"):
        assert not store.reload()
    assert "alice" in store.users and f"{path}: line 1" in caplog.text
    assert UserStore.open(None).reload()


def authenticator(tmp_path: Path, *, tokens: bool = False, users: bool = True,
                  limiter: FailureLimiter | None = None) -> ClientAuthenticator:
    token_store = TokenStore("tokens", ("s3cret-token",)) if tokens else TokenStore(None)
    user_store = (UserStore.open(str(users_file(tmp_path, alice="right"))) if users
                  else UserStore(None))
    return ClientAuthenticator(token_store, user_store, limiter)


def test_no_auth_configured_is_anonymous_by_address(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, users=False)
    assert not auth.enabled and auth.challenge == 'Bearer realm="fleetzip"'
    caller = asyncio.run(auth.authenticate(request(basic("alice", "x"))))
    assert caller is not None and (caller.name, caller.key) == ("anonymous", "address:10.0.0.1")
    caller = asyncio.run(auth.authenticate(request(address=None)))
    assert caller is not None and caller.key == "address:unknown"


def test_challenge_lists_basic_first_then_bearer(tmp_path: Path) -> None:
    assert authenticator(tmp_path).challenge == 'Basic realm="fleetzip", charset="UTF-8"'
    assert authenticator(tmp_path, tokens=True).challenge == (
        'Basic realm="fleetzip", charset="UTF-8", Bearer realm="fleetzip"')
    assert authenticator(tmp_path, tokens=True, users=False).challenge == (
        'Bearer realm="fleetzip"')


def test_basic_user_and_token_callers(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, tokens=True)
    assert auth.enabled

    async def callers() -> list[tuple[str, str] | None]:
        found = []
        for header in (basic("alice", "right"), basic("alice", "right"), "Bearer s3cret-token",
                       "Bearer other", basic("alice", "wrong"), basic("bob", "right"), None):
            caller = await auth.authenticate(request(header))
            found.append(None if caller is None else (caller.name, caller.key))
        return found

    found = asyncio.run(callers())
    assert found[:2] == [("alice", "user:alice")] * 2  # the 2nd from the cache
    assert found[2] is not None and found[2][0] == "token"
    key = found[2][1]
    assert key.startswith("token:") and len(key) == 22 and "s3cret" not in key
    assert found[3:] == [None, None, None, None]


def test_basic_is_not_accepted_when_only_tokens_are_configured(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, tokens=True, users=False)
    assert asyncio.run(auth.authenticate(request(basic("alice", "right")))) is None


def test_wrong_passwords_are_limited_per_address_but_a_known_pair_passes(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    auth = authenticator(tmp_path, limiter=FailureLimiter(limit=2, window=60))

    async def run() -> None:
        assert await auth.authenticate(request(basic("alice", "right"))) is not None
        with caplog.at_level(logging.INFO, logger="coordinator.users"):
            for _ in range(2):
                assert await auth.authenticate(request(basic("alice", "wrong"))) is None
        with pytest.raises(TooManyRequests):
            await auth.authenticate(request(basic("alice", "wrong")))
        with pytest.raises(TooManyRequests):
            await auth.authenticate(request(basic("alice", "never-verified")))
        # verified before: no hashing, so not limited
        assert await auth.authenticate(request(basic("alice", "right"))) is not None
        # another address is not limited
        assert await auth.authenticate(request(basic("alice", "wrong"), "10.0.0.2")) is None

    asyncio.run(run())
    assert "wrong password for 'alice' from 10.0.0.1" in caplog.text


def test_limiter_bounds_pending_checks_and_tracked_addresses() -> None:
    now = [0.0]
    limiter = FailureLimiter(limit=5, window=60, addresses=2, pending=2, clock=lambda: now[0])
    with limiter.checking("a"), limiter.checking("b"), \
            pytest.raises(TooManyRequests, match="in progress"):
        limiter.admit("c")
    limiter.admit("c")  # the pending checks ended
    for address in ("a", "a", "a", "a", "a", "b", "c"):  # 'a' is dropped: least recent
        limiter.failed(address)
    limiter.admit("a")
    now[0] = 59.0
    for _ in range(5):
        limiter.failed("b")  # 6 failures of b within the window
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit("b")
    assert refused.value.headers["Retry-After"] == "1"  # its oldest failure expires at 60
    now[0] = 60.0  # a failure exactly one window old has expired
    with pytest.raises(TooManyRequests):
        limiter.admit("b")  # still 5 within the window
    now[0] = 120.0
    limiter.admit("b")


def run_main(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
             argv: list[str], stdin: str) -> tuple[int, str, str]:
    import io

    from coordinator.users import main

    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_users_command_prints_a_line_that_verifies(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_main(monkeypatch, capsys, ["bob", "--iterations", "1000"],
                              "hunter2\r\nignored\n")
    assert (code, err) == (0, "")
    name, _, encoded = out.rstrip("\n").partition(":")
    assert name == "bob" and out.endswith("\n") and out.count("\n") == 1
    assert encoded.split("$")[:2] == ["pbkdf2_sha256", "1000"]
    assert verify_password("hunter2", encoded)  # only the first line, without its CR LF


def test_users_command_default_iterations(monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("coordinator.users.DEFAULT_ITERATIONS", 1001)
    from coordinator import users

    monkeypatch.setattr(users, "hash_password",
                        lambda password, iterations: f"{password}|{iterations}")
    code, out, _ = run_main(monkeypatch, capsys, ["bob"], "pw\n")
    assert code == 0 and out == "bob:pw|1001\n"  # the default is DEFAULT_ITERATIONS


@pytest.mark.parametrize(("argv", "stdin", "message"), [
    (["a:b"], "pw\n", "the name must be non-empty and hold no ':'"),
    ([" "], "pw\n", "the name must be non-empty and hold no ':'"),
    (["bob", "--iterations", "999"], "pw\n", "--iterations must be at least 1000"),
    (["bob", "--iterations", "1000"], "\n", "empty password"),
    (["bob", "--iterations", "1000"], "", "empty password"),
])
def test_users_command_refuses_bad_input_with_exit_2(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str], stdin: str, message: str) -> None:
    code, out, err = run_main(monkeypatch, capsys, argv, stdin)
    assert code == 2 and out == ""
    assert err.startswith("usage: python -m coordinator.users") and f"error: {message}" in err


def test_hash_format_and_exact_refusals() -> None:
    encoded = hash_password("x", iterations=FAST)
    assert len(bytes.fromhex(encoded.split("$")[2])) == 16  # a 16-byte random salt
    cases = [("md5$1000$aa$00", r"^expected pbkdf2_sha256\$<iterations>\$<salt>\$<hash>$"),
             ("pbkdf2_sha256$x$aa$00", "^iterations must be a number, salt and hash hexadecimal$"),
             ("pbkdf2_sha256$999$aa$" + "00" * 32,
              "^need at least 1000 iterations, a salt and a 32-byte hash$")]
    for bad, message in cases:
        with pytest.raises(ValueError, match=message):
            verify_password("x", bad)


def test_users_file_name_is_before_the_first_colon(tmp_path: Path) -> None:
    (tmp_path / "users").write_text(f"a:b:{hash_password('x', iterations=FAST)}\n")
    with pytest.raises(ValueError, match=r"^line 1: "):
        read_users(tmp_path / "users")
    (tmp_path / "users").write_text("\n")
    with pytest.raises(ValueError, match=r"^no user in the file$"):
        read_users(tmp_path / "users")


class CountingExecutor:
    """Runs the hashing inline and counts it; *before* runs first (a reload racing)."""

    def __init__(self, before: object = None) -> None:
        self.calls = 0
        self.before = before

    def submit(self, fn, *args):  # type: ignore[no-untyped-def]
        import concurrent.futures

        self.calls += 1
        if callable(self.before):
            self.before()
        future: concurrent.futures.Future[object] = concurrent.futures.Future()
        future.set_result(fn(*args))
        return future


def test_hashing_runs_in_the_given_executor_and_a_racing_change_is_not_cached(
        tmp_path: Path) -> None:
    executor = CountingExecutor()
    store = UserStore.open(str(users_file(tmp_path, alice="right")), executor)  # type: ignore[arg-type]
    assert asyncio.run(store.check("alice", "right")) and executor.calls == 1
    # the users changed while the hash was being checked: not accepted, not remembered
    executor.before = lambda: setattr(store, "users", {"alice": hash_password(
        "right", iterations=FAST)})
    assert not asyncio.run(store.check("bob", "right"))
    store._verified.clear()
    assert not asyncio.run(store.check("alice", "right"))
    assert not store.cached("alice", "right")


def test_cache_is_tied_to_the_users_hash() -> None:
    store = UserStore("users", {"alice": hash_password("right", iterations=FAST)})
    assert asyncio.run(store.check("alice", "right"))
    store.users = {"alice": hash_password("right", iterations=FAST)}  # a new hash, same password
    assert not store.cached("alice", "right")


def test_cache_drops_the_least_recently_used_pair() -> None:
    names = [f"u{i}" for i in range(CACHE_SIZE + 1)]
    store = UserStore("users", {n: hash_password("pw", iterations=FAST) for n in names})

    async def fill() -> None:
        for name in names[:-1]:
            assert await store.check(name, "pw")
        assert store.cached(names[0], "pw")  # used again: now the most recent
        assert await store.check(names[-1], "pw")

    asyncio.run(fill())
    assert store.cached(names[0], "pw") and store.cached(names[-1], "pw")
    assert not store.cached(names[1], "pw")


def test_reload_logs_exactly_and_keeps_checking_unknown_users(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = users_file(tmp_path, alice="right")
    store = UserStore.open(str(path))
    with caplog.at_level(logging.INFO, logger="coordinator.users"):
        assert store.reload()
        path.write_text("alice:plaintext\n")
        assert not store.reload()
    assert [r.getMessage() for r in caplog.records] == [
        f"reloaded 1 user(s) from {path}",
        f"users reload failed, keeping the previous users: {path}: line 1: expected "
        "pbkdf2_sha256$<iterations>$<salt>$<hash>"]
    assert not asyncio.run(store.check("mallory", "right"))


def test_limiter_window_edge_and_pending_only_retry_after() -> None:
    now = [0.0]
    limiter = FailureLimiter(limit=2, window=60, clock=lambda: now[0])
    with limiter.checking("a"), limiter.checking("a"), \
            pytest.raises(TooManyRequests) as refused:
        limiter.admit("a")  # no failure yet, two checks running
    assert refused.value.headers["Retry-After"] == "1"
    assert str(refused.value) == "too many wrong passwords from a: at most 2 in 60s; retry later"
    limiter.failed("a")
    now[0] = 30.0
    limiter.failed("a")
    now[0] = 60.0  # the first failure is exactly one window old: expired
    limiter.admit("a")
    with pytest.raises(TooManyRequests) as refused:
        FailureLimiter(pending=0).admit("b")
    assert str(refused.value) == "too many password checks in progress; retry later"


def test_bearer_is_not_a_token_when_only_users_are_configured(tmp_path: Path) -> None:
    auth = authenticator(tmp_path)
    assert asyncio.run(auth.authenticate(request("Bearer anything"))) is None


def test_basic_on_a_tokens_only_coordinator_is_not_counted_as_a_failure(tmp_path: Path) -> None:
    auth = authenticator(tmp_path, tokens=True, users=False,
                         limiter=FailureLimiter(limit=1, window=60))

    async def run() -> None:
        for _ in range(2):
            assert await auth.authenticate(request(basic("alice", "x"))) is None

    asyncio.run(run())


def test_each_token_has_its_own_key(tmp_path: Path) -> None:
    auth = ClientAuthenticator(TokenStore("tokens", ("token-one", "token-two")), UserStore(None))

    async def keys() -> set[str]:
        found = set()
        for token in ("token-one", "token-two"):
            caller = await auth.authenticate(request(f"Bearer {token}"))
            assert caller is not None
            found.add(caller.key)
        return found

    assert len(asyncio.run(keys())) == 2


def test_wrong_password_log_cuts_long_names(tmp_path: Path,
                                            caplog: pytest.LogCaptureFixture) -> None:
    auth = authenticator(tmp_path)
    with caplog.at_level(logging.INFO, logger="coordinator.users"):
        assert asyncio.run(auth.authenticate(request(basic("n" * 100, "x")))) is None
    assert [r.getMessage() for r in caplog.records] == [
        f"wrong password for {'n' * 64!r} from 10.0.0.1"]


def test_authenticator_reload_fails_when_either_store_fails(tmp_path: Path) -> None:
    path = users_file(tmp_path, alice="right")
    tokens = tmp_path / "tokens"
    tokens.write_text("tok\n")
    auth = ClientAuthenticator(TokenStore.open(str(tokens)), UserStore.open(str(path)))
    assert auth.reload()
    path.write_text("bad\n")
    assert not auth.reload()
