"""Mutation testing of the modules that carry the rules, one module at a time (``make mutation``).

For each module a throw-away copy of ``agent/``, ``coordinator/``, ``common/`` and ``tests/``
is made under ``build/mutation/<module>/`` with a ``[tool.mutmut]`` section that mutates only
that module and runs only the fast tests that cover it (`COVERING_TESTS`). mutmut then runs
each mutant against the tests that reached the mutated function, one mutant at a time
(``--max-children``, default 1: the machine is shared), and a per-module time budget stops a
run that takes too long. The worktree itself is never mutated.

Output: one line per module, ``module: killed/total = rate`` (timeouts and segfaults count
as killed, as mutmut counts them), then the surviving mutants with ``mutmut show`` diffs, in
``build/mutation/<module>/report.txt``; ``build/mutation/summary.txt`` collects the lines.

    python -m tests.mutation.run common/names.py agent/paths.py
    python -m tests.mutation.run            # every module of COVERING_TESTS
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "build" / "mutation"

# The module under mutation and the fast (in-process, unit-level) test files that cover it.
# Tests that start agents or coordinators as subprocesses cannot see a mutant and are left out.
COVERING_TESTS: dict[str, list[str]] = {
    # path safety
    "agent/paths.py": ["tests/agent/test_paths.py", "tests/agent/test_paths_race.py",
                       "tests/agent/test_units.py"],
    "common/names.py": ["tests/common/test_names.py", "tests/common/test_auth.py"],
    # ranges and conditionals
    "agent/ranges.py": ["tests/agent/test_conditionals.py", "tests/agent/test_ranges_parser.py",
                        "tests/agent/test_units.py"],
    "common/etag.py": ["tests/common/test_etag.py"],
    # selection and planning
    "coordinator/selection.py": ["tests/coordinator/test_selection.py",
                                 "tests/coordinator/test_service_units.py"],
    "coordinator/planner.py": ["tests/coordinator/test_planner_units.py",
                               "tests/coordinator/test_service_units.py",
                               "tests/coordinator/test_hostile_listing.py"],
    # listing validation (untrusted agent answers)
    "coordinator/listing.py": ["tests/coordinator/test_listing_units.py",
                               "tests/coordinator/test_service_units.py",
                               "tests/coordinator/test_hostile_listing.py"],
    # globs (agent walk filters)
    # (test_globs.py's hypothesis comparison takes ~15 s per mutant: test_globs_table.py
    # makes the same comparison over an enumerated table in a fraction of a second)
    "common/globs.py": ["tests/common/test_globs_table.py", "tests/agent/test_units.py"]
    + [f"tests/common/test_globs.py::{name}" for name in (
        "test_examples", "test_refused", "test_at_the_limits",
        "test_hostile_globs_still_answer_correctly", "test_recursive",
        "test_class_ranges_and_members")],
    # size arithmetic and ZIP layout: the layout and records are zipwriter's; its tests that
    # run unzip, 7z, bsdtar and java are left out (too slow to repeat for every mutant)
    "coordinator/zipwriter.py": [
        f"tests/coordinator/test_zipwriter.py::{name}" for name in (
            "test_layout_size_equals_zipstream_ng_plus_the_timestamp_extras",
            "test_layout_zip64_sizes_equal_zipstream_ng_with_lowered_limits",
            "test_writer_follows_the_layout_byte_for_byte",
            "test_stored_entry_with_known_crc_has_no_descriptor",
            "test_entry_time_is_the_source_mtime_dos_and_utc_extra",
            "test_unwritable_promises_are_refused",
            "test_forcing_bytes_make_the_promised_crc",
            "test_writer_never_holds_entry_data")]
    + ["tests/coordinator/test_zipwriter_fields.py",
       "tests/coordinator/test_zipwriter_records.py"],
    "coordinator/archive.py": ["tests/coordinator/test_archive_plan.py",
                               "tests/coordinator/test_archive.py"],
    # status rendering
    # (tests/coordinator/test_archive.py renders them too, but runs unzip and 7z: too slow
    # to repeat for every mutant)
    "coordinator/status.py": ["tests/coordinator/test_status.py",
                              "tests/coordinator/test_status_rejected.py"],
    # auth
    "common/auth.py": ["tests/common/test_auth.py"],
    "coordinator/users.py": ["tests/coordinator/test_users_units.py",
                             "tests/coordinator/test_users_command.py",
                             "tests/coordinator/test_service_units.py"],
    # the check plugin
    "coordinator/client/check.py": ["tests/cli/test_check_rules.py",
                                    "tests/cli/test_check_http.py"],
}

# Modules where only some functions carry the rule: only their mutants are run (the rest of
# the module is reported as "not checked"). archive.py: how a plan becomes entry specs and a
# size; the ZIP layout itself is coordinator/zipwriter.py's (mutated on its own).
ONLY_FUNCTIONS: dict[str, list[str]] = {
    "coordinator/archive.py": ["entry_mode", "file_spec", "planned_entries", "status_specs",
                               "archive_layout", "planned_archive_size"],
}

COPIED = ("agent", "coordinator", "common", "tests", "docs")
COPIED_FILES = ("agent.example.yml", "coordinator.example.yml", "README.md")  # tests read them
ENV = {**os.environ, "CI": "true", "PYTHONDONTWRITEBYTECODE": "1"}
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".pytest_cache", "mutants")


def slug(module: str) -> str:
    return module.removesuffix(".py").replace("/", ".")


def prepare(module: str, workdir: Path) -> None:
    """A fresh copy of the code and the tests with a mutmut config for *module* alone."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in COPIED:
        shutil.copytree(ROOT / name, workdir / name, ignore=IGNORED)
    for name in COPIED_FILES:
        shutil.copy2(ROOT / name, workdir / name)
    tests = ", ".join(json.dumps(t) for t in COVERING_TESTS[module])
    basetemp = json.dumps(str(workdir / "tmp"))  # not the shared /tmp/pytest-of-<user>
    also_copy = ", ".join(json.dumps(name) for name in ("docs", *COPIED_FILES))
    (workdir / "pyproject.toml").write_text(f"""\
[tool.mutmut]
source_paths = ["agent", "coordinator", "common"]
also_copy = [{also_copy}]
only_mutate = [{json.dumps(module)}]
pytest_add_cli_args_test_selection = [{tests}]
pytest_add_cli_args = ["-p", "no:cacheprovider", "-q", "--basetemp", {basetemp}]
use_git_change_detection = false

[tool.pytest.ini_options]
timeout = 120
filterwarnings = ["ignore::pytest.PytestRemovedIn10Warning"]
markers = ["browser: needs Chromium", "slow: takes more than a few seconds"]
""")


def mutmut(workdir: Path, *args: str) -> str:
    """The output of ``mutmut ARGS`` run in *workdir*."""
    command = [sys.executable, "-m", "mutmut", *args]
    return subprocess.run(command, cwd=workdir, env=ENV, capture_output=True, text=True,
                          check=False).stdout


def mutmut_run(workdir: Path, module: str, children: int, budget: float,
               resume: bool = False) -> int | None:
    """``mutmut run`` in its own process group: its exit code, None when stopped at *budget*."""
    names = [f"{slug(module)}.x_{function}__mutmut_*"
             for function in ONLY_FUNCTIONS.get(module, [])]
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(children), *names]
    with (workdir / "run.log").open("a" if resume else "w") as log:
        process = subprocess.Popen(command, cwd=workdir, env=ENV, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return process.wait(timeout=budget)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGTERM)  # mutmut and the mutant it runs
            process.wait(30)
            return None


class RunFailed(Exception):
    """mutmut did not judge the module: no figure may be printed for it."""


def log_tail(workdir: Path, lines: int = 15) -> str:
    try:
        text = (workdir / "run.log").read_text(errors="replace")
    except OSError:
        return "(no run.log)"
    # mutmut redraws its progress line with carriage returns: keep the last state of each line
    kept = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    return "\n".join(line for line in kept[-lines:])


def counts(workdir: Path) -> dict[str, int]:
    """mutmut's saved results (``export-cicd-stats``); RunFailed when there are none."""
    mutmut(workdir, "export-cicd-stats")  # written from the results saved so far
    try:
        stats = json.loads((workdir / "mutants" / "mutmut-cicd-stats.json").read_text())
    except (OSError, ValueError) as error:
        raise RunFailed(f"no results to export ({error})") from None
    return {k: int(v) for k, v in stats.items() if isinstance(v, int)}


def survivors(workdir: Path) -> list[str]:
    listing = mutmut(workdir, "results")
    return [line.split(":")[0].strip() for line in listing.splitlines()
            if line.strip().endswith(("survived", "no tests"))]


# ``mutmut show`` of many mutants in one process (one ``mutmut show`` each takes seconds to
# start on a loaded machine: minutes for a module with a hundred survivors)
SHOW = """\
import sys
from mutmut import __main__ as mutmut
for name in sys.argv[1:]:
    print("---", name, flush=True)
    mutmut.show.callback(name)
    print(flush=True)
"""


def shows(workdir: Path, names: list[str]) -> str:
    """The diff of each mutant in *names*, as ``mutmut show`` prints it."""
    if not names:
        return ""
    done = subprocess.run([sys.executable, "-c", SHOW, *names], cwd=workdir, env=ENV,
                          capture_output=True, text=True, check=False)
    if done.returncode == 0:
        return done.stdout
    # mutmut's internals changed: one ``mutmut show`` per mutant
    return "".join(f"--- {name}\n{mutmut(workdir, 'show', name).rstrip()}\n\n"
                   for name in names)


def run_module(module: str, budget: float, children: int, resume: bool = False) -> str:
    """The module's figure line; RunFailed when mutmut failed or judged no mutant.

    A failed run (mutmut exits non-zero: the clean test run or the stats collection failed,
    no test covers the module...) leaves empty or partial results that would read as
    ``killed 0/0``: it is reported as a failure with the end of mutmut's log, never as a figure.
    """
    workdir = BUILD / slug(module)
    resume = resume and (workdir / "mutants").is_dir()
    if not resume:
        prepare(module, workdir)
    started = time.monotonic()
    code = mutmut_run(workdir, module, children, budget, resume)
    elapsed = time.monotonic() - started
    if code is None:
        finished = (f"STOPPED at the {budget:g} s budget: figures are partial; "
                    f"continue with --resume")
    elif code == 0:
        finished = "complete, resumed" if resume else "complete"
    else:
        raise RunFailed(f"mutmut run exited {code} after {elapsed:.0f} s; the end of "
                        f"{workdir / 'run.log'}:\n{log_tail(workdir)}")
    stats = counts(workdir)
    killed = stats.get("killed", 0) + stats.get("timeout", 0) + stats.get("segfault", 0)
    missed = stats.get("survived", 0) + stats.get("no_tests", 0) + stats.get("suspicious", 0)
    judged = killed + missed
    if not judged:
        raise RunFailed(f"no mutant judged after {elapsed:.0f} s ({finished}); the end of "
                        f"{workdir / 'run.log'}:\n{log_tail(workdir)}")
    unchecked = stats.get("total", 0) - judged - stats.get("skipped", 0)
    rate = f"{100 * killed / judged:.1f}%"
    line = (f"{module}: killed {killed}/{judged} = {rate} "
            f"(survived {stats.get('survived', 0)}, no tests {stats.get('no_tests', 0)}, "
            f"suspicious {stats.get('suspicious', 0)}, not checked {unchecked}; "
            f"{elapsed:.0f} s, {finished})")
    (workdir / "report.txt").write_text(f"{line}\n\n{shows(workdir, survivors(workdir))}")
    return line


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("modules", nargs="*", help="e.g. agent/paths.py (default: all)")
    parser.add_argument("--budget", type=float, default=900, help="seconds per module")
    parser.add_argument("--max-children", type=int, default=1)
    parser.add_argument("--resume", action="store_true",
                        help="continue a run stopped at its budget: the mutants it judged "
                             "are kept, on the copy made when it started (changes made to "
                             "the worktree since are not seen)")
    args = parser.parse_args()
    modules = args.modules or list(COVERING_TESTS)
    unknown = [m for m in modules if m not in COVERING_TESTS]
    if unknown:
        parser.error(f"no covering tests known for {', '.join(unknown)}; "
                     f"known: {', '.join(COVERING_TESTS)}")
    BUILD.mkdir(parents=True, exist_ok=True)
    failed = []
    for module in modules:
        try:
            line = run_module(module, args.budget, args.max_children, args.resume)
        except RunFailed as error:
            failed.append(module)
            line = f"{module}: FAILED, no figure: {error}"
            print(line, file=sys.stderr, flush=True)
            line = line.splitlines()[0]
        else:
            print(line, flush=True)
        with (BUILD / "summary.txt").open("a") as summary:  # kept even if a later one is cut
            stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            summary.write(f"{stamp}  {line}\n")
    if failed:
        print(f"mutation run FAILED for {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
