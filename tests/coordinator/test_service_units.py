"""Pure parts of the coordinator service: password hashes, file_sd rules, selection
parameters, untrusted listings. No servers."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import pytest

from common.errors import BadRequest
from coordinator.discovery import parse_file_sd
from coordinator.listing import checked_entries
from coordinator.selection import parse_selection
from coordinator.users import hash_password, read_users, verify_password

NOW = 1_700_000_000.0


def test_password_hash_is_salted_and_verifies() -> None:
    one, two = hash_password("pw", iterations=1000), hash_password("pw", iterations=1000)
    assert one != two  # a fresh salt each time
    assert one.startswith("pbkdf2_sha256$1000$")
    assert verify_password("pw", one) and verify_password("pw", two)
    assert not verify_password("pW", one)


def test_users_cli_makes_a_line_from_stdin(tmp_path) -> None:  # type: ignore[no-untyped-def]
    done = subprocess.run([sys.executable, "-m", "coordinator.users", "bob", "--iterations",
                           "2000"], input="hunter2\n", capture_output=True, text=True,
                          check=True)
    line = done.stdout.strip()
    assert "hunter2" not in line
    (tmp_path / "users").write_text(line + "\n")
    users = read_users(tmp_path / "users")
    assert verify_password("hunter2", users["bob"])


def test_bad_users_line_names_the_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "users").write_text("# comment\nalice:plaintext\n")
    with pytest.raises(ValueError, match="line 2"):
        read_users(tmp_path / "users")


def test_file_sd_name_rules() -> None:
    agents = parse_file_sd([
        {"targets": ["10.0.0.5:8701"], "labels": {"node": "web1", "env": "prod"}},
        {"targets": ["https://db1.example.com:8701"], "labels": {"__meta_x": "y"}},
        {"targets": ["h2:9000"], "labels": {"__scheme__": "https", "name": "h-two"}},
        {"targets": ["a.example:1", "b.example:1"], "labels": {"rack": "r1"}},
    ])
    assert agents["web1"].url == "http://10.0.0.5:8701"
    assert dict(agents["web1"].labels) == {"env": "prod"}
    assert agents["db1.example.com"].url == "https://db1.example.com:8701"
    assert dict(agents["db1.example.com"].labels) == {}
    assert agents["h-two"].url == "https://h2:9000"
    assert dict(agents["a.example"].labels) == {"rack": "r1"} and "b.example" in agents
    assert {a.source for a in agents.values()} == {"file"}


@pytest.mark.parametrize("doc, problem", [
    ({"targets": []}, "list"),
    ([{"targets": "x:1"}], "targets"),
    ([{"targets": ["a:1", "b:1"], "labels": {"node": "n"}}], "one target"),
    ([{"targets": ["a:1"]}, {"targets": ["a:2"]}], "duplicate"),
    ([{"targets": ["ftp://a:1"]}], "not an http"),
    ([{"targets": ["a:1"], "labels": {"node": "../evil"}}], "invalid node name"),
])
def test_file_sd_errors(doc: object, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_file_sd(doc)


def parse(**args: str) -> object:
    return parse_selection({k: [v] for k, v in args.items()}, known_nodes=["n1", "n2"],
                           default_compression="stored", now=NOW)


@pytest.mark.parametrize("args, parameter", [
    ({}, "root"),
    ({"root": "a/b"}, "root"),
    ({"root": "logs", "path": "../x"}, "path"),
    ({"root": "logs", "glob": "a**b"}, "glob"),
    ({"root": "logs", "glob": "[abc"}, "glob"),
    ({"root": "logs", "glob": "/etc/*"}, "glob"),
    ({"root": "logs", "since": "yesterday"}, "since"),
    ({"root": "logs", "since": "2h30"}, "since"),
    ({"root": "logs", "nodes": "n1,zz"}, "nodes"),
    ({"root": "logs", "labels": "novalue"}, "labels"),
    ({"root": "logs", "compression": "bzip2"}, "compression"),
    ({"root": "logs", "name": "a/b.zip"}, "name"),
])
def test_each_bad_parameter_is_named(args: dict[str, str], parameter: str) -> None:
    with pytest.raises(BadRequest) as caught:
        parse(**args)
    assert caught.value.parameter == parameter
    assert caught.value.message.startswith(parameter + ":")


def test_good_selection() -> None:
    selection = parse(root="logs", path="/sub/", glob="**/*.log", since="2h", nodes="n2",
                      labels="env=prod,rack=r1", compression="deflate", name="x.zip")
    assert selection.root == "logs" and selection.path == "sub"  # type: ignore[attr-defined]
    assert selection.since == NOW - 7200  # type: ignore[attr-defined]
    assert selection.nodes == ("n2",)  # type: ignore[attr-defined]
    assert dict(selection.labels) == {"env": "prod", "rack": "r1"}  # type: ignore[attr-defined]
    assert parse(root="logs", since="2023-11-14T22:13:20Z").since == NOW  # type: ignore[attr-defined]
    assert parse(root="logs", since="1700000000").since == NOW  # type: ignore[attr-defined]


def test_untrusted_listing_entries_are_refused_and_recorded() -> None:
    body = {"entries": [
        {"path": "ok.log", "size": 3, "mtime": 1.0, "type": "file"},
        {"path": "../../etc/passwd", "size": 3, "mtime": 1.0, "type": "file"},
        {"path": "/abs", "size": 3, "mtime": 1.0, "type": "file"},
        {"path": "a\\b", "size": 3, "mtime": 1.0, "type": "file"},
        {"path": "nul\x00x", "size": 3, "mtime": 1.0, "type": "file"},
        {"path": "neg.log", "size": -1, "mtime": 1.0, "type": "file"},
        {"path": "dir", "size": 0, "mtime": 1.0, "type": "dir"},
        {"path": "ok.log", "size": 3, "mtime": 1.0, "type": "file"},
    ]}
    files, rejected = checked_entries(body, None)
    assert [f.path for f in files] == ["ok.log"]
    assert len(rejected) == 6
    assert any("'..'" in r for r in rejected) and any("listed twice" in r for r in rejected)
    files, rejected = checked_entries({"entries": [
        {"path": "other/x", "size": 1, "mtime": 1, "type": "file"}]}, "sub")
    assert not files and "outside the requested path" in rejected[0]


def test_example_config_loads_and_documents_every_key() -> None:
    import dataclasses
    from pathlib import Path

    from coordinator.config import CoordinatorConfig, load

    example = Path(__file__).resolve().parents[2] / "coordinator.example.yml"
    assert load(example) == CoordinatorConfig()
    text = example.read_text()

    def keys(cls: type) -> list[str]:
        found = []
        for f in dataclasses.fields(cls):
            found.append(f.name)
            inner = f.type if isinstance(f.type, type) else None
            if inner is not None and dataclasses.is_dataclass(inner):
                found += keys(inner)
        return found

    import typing

    hints = typing.get_type_hints(CoordinatorConfig)
    nested = [h for h in hints.values() if dataclasses.is_dataclass(h)]
    names = keys(CoordinatorConfig) + [k for cls in nested for k in keys(cls)]
    missing = [name for name in names if f"{name}:" not in text]
    assert not missing, missing


def test_unknown_user_costs_a_hash_check_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Timing must not tell which user names exist: an unknown name is checked against a
    hash of the same cost (iterations) as well."""
    from coordinator import users

    store = users.UserStore(None, {"alice": hash_password("right", iterations=1000)})
    calls: list[str] = []
    real = users.verify_password
    monkeypatch.setattr(users, "verify_password",
                        lambda password, encoded: calls.append(encoded) or real(password, encoded))

    async def checks() -> list[bool]:
        return [await store.check("mallory", "right"), await store.check("alice", "wrong"),
                await store.check("alice", "right"), await store.check("alice", "right")]

    assert asyncio.run(checks()) == [False, False, True, True]
    assert len(calls) == 3 and calls[0] != store.users["alice"]  # the 4th: from the cache
    assert calls[0].split("$")[1] == "1000"
    assert not any(b"right" in key for key in store._verified)


@pytest.mark.parametrize(("entry", "why"), [
    ({"size": 2**64}, "size 18446744073709551616 is not"),
    ({"size": 10**4000}, "size an integer of 4001 digits"),
    ({"size": 2**63}, "is not an integer in 0..9223372036854775807"),
    ({"size": True}, "size True"),
    ({"size": 1.0}, "size 1.0"),
    ({"mtime": float("nan")}, "mtime nan"),
    ({"mtime": float("inf")}, "mtime inf"),
    ({"mtime": 1e300}, "years 1..9999"),
    ({"mtime": "1"}, "is not a number"),
    ({"type": ["file"]}, "type ['file'] is not a string"),
    ({"path": 42}, "entry path 42 is not a string"),
])
def test_listing_fields_out_of_range_are_refused(entry: dict[str, object], why: str) -> None:
    body = {"entries": [{"path": "ok.log", "size": 1, "mtime": 1.0, "type": "file"},
                        {"path": "bad.log", "size": 2**63 - 1, "mtime": 1.0, "type": "file",
                         **entry}]}
    files, rejected = checked_entries(body, None)
    assert [f.path for f in files] == ["ok.log"]
    assert len(rejected) == 1 and why in rejected[0] and len(rejected[0]) < 200, rejected


def test_listing_refusals_kept_are_bounded() -> None:
    body = {"entries": [{"path": f"f{i}", "size": -1, "mtime": 1, "type": "file"}
                        for i in range(1000)]}
    files, rejected = checked_entries(body, None)
    assert not files and len(rejected) == 21 and rejected[-1] == "... and 980 more refused entries"


def test_failure_limiter_counts_per_address_and_expires() -> None:
    from common.errors import TooManyRequests
    from coordinator.users import FailureLimiter

    now = [0.0]
    limiter = FailureLimiter(limit=3, window=60, addresses=2, clock=lambda: now[0])
    for _ in range(3):
        limiter.admit("10.0.0.1")
        limiter.failed("10.0.0.1")
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit("10.0.0.1")
    assert refused.value.headers["Retry-After"] == "60"
    limiter.admit("10.0.0.2")  # another address is not affected
    with limiter.checking("10.0.0.2"), limiter.checking("10.0.0.2"):
        limiter.failed("10.0.0.2")
        with pytest.raises(TooManyRequests):  # checks in flight count too
            limiter.admit("10.0.0.2")
    now[0] = 30.0
    assert limiter.admit("10.0.0.2") is None
    with pytest.raises(TooManyRequests) as refused:
        limiter.admit("10.0.0.1")
    assert refused.value.headers["Retry-After"] == "30"
    now[0] = 60.5
    limiter.admit("10.0.0.1")  # the window passed
    for address in ("a", "b", "c"):  # at most 2 addresses remembered
        limiter.failed(address)
    assert len(limiter._failures) == 2
