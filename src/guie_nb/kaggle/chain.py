"""The kernel chain as a resumable state machine: push what is ready, record it, pick it up later.

A full preset's chain runs for days (data-prep, then hours of TPU training per kernel), longer than
any one CI job or terminal session. So one pass (`advance`) never waits: for each kernel in chain
order it pushes the kernel when its staged content or its inputs changed since its last pushed
version (and the kernels before it are complete), checks a pushed run's status tied to its run id
(`KaggleClient.run_status`: a stale COMPLETE is not taken), and stops at the first kernel still
running. The state is a JSON file (`save_state` / `load_state`); `make push` loops passes until the
chain completes, CI runs one pass per dispatch or schedule and keeps the file as an artifact.
`submit` submits the submit kernel's version that this state pushed, after checking its output.

Kernels are keyed by their kernel key (`StagedKernel.key`): the notebook, a notebook run as a named
stage (`03_finetune:backbone-280`, `guie_nb.stages`), or a data-prep part (`01_data_prep#0`).

State (JSON):
    {"schema": 1, "preset": str, "owner": str, "active": bool, "helpers_sha256": str | null,
     "kernels": {kernel key: {"ref", "version": int, "run_id", "content_sha256",
                            "inputs": {ref: version}, "internet": bool,
                            "status": "pushed" | "complete" | "failed", "failure": str | null}},
     "submission": null | {"ref", "version", "run_id", "message", "sha256", "result"},
     "log": [str]}
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from guie_nb.kaggle import metadata as md
from guie_nb.kaggle.client import KaggleClient, KaggleError
from guie_nb.kaggle.layout import HELPERS_SLUG
from guie_nb.kaggle.paths import RUN_MARKER, SUBMISSION, SUBMIT_REPORT, VERIFICATION_REPORT
from guie_nb.kaggle.stage import StagedKernel

SCHEMA = 1
COMPETITION = "google-universal-image-embedding"
SUBMIT_NOTEBOOK = "05_submit"
EXPORT_NOTEBOOK = "04_export"
STATE_FILE = "chain_state.json"


class ChainFailed(KaggleError):
    """A kernel of the chain ended in error, or the chain cannot go on as staged (the reason)."""


class SubmitRefused(KaggleError):
    """`submit` will not submit: the reason says what is missing, failed or does not match."""


@dataclass(frozen=True)
class Outcome:
    """One pass's result: `done` (every kernel complete), else `waiting_for` names the kernel and
    why; `pushed` lists the kernel keys pushed in this pass; `idle`: nothing to resume."""

    done: bool
    waiting_for: str | None = None
    pushed: tuple[str, ...] = ()
    idle: bool = False


def new_state(preset: str, owner: str) -> dict:
    return {"schema": SCHEMA, "preset": preset, "owner": owner, "active": False, "helpers_sha256": None,
            "kernels": {}, "submission": None, "log": []}


def load_state(path: str | Path, preset: str, owner: str) -> dict:
    """The saved state, or a new one when `path` does not exist. Raises ChainFailed when it is for
    another preset or owner (the versions it records are not this chain's)."""
    path = Path(path)
    if not path.is_file():
        return new_state(preset, owner)
    state = json.loads(path.read_text())
    if state.get("schema") != SCHEMA:
        raise ChainFailed(f"{path}: unknown chain state schema {state.get('schema')!r}")
    if (state["preset"], state["owner"]) != (preset, owner):
        raise ChainFailed(f"{path} is the chain of preset {state['preset']!r} owned by {state['owner']!r}, not "
                          f"{preset!r} / {owner!r}: pass another --state file")
    return state


def save_state(state: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(state, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def _inputs(kernel: StagedKernel, by_ref: dict[str, str], state: dict) -> dict[str, int | None]:
    """The pushed versions of the chain kernels this kernel mounts."""
    return {ref: (state["kernels"].get(by_ref[ref]) or {}).get("version")
            for ref in kernel.meta.get("kernel_sources", []) if ref in by_ref}


def _note(state: dict, log: Callable[[str], None], text: str) -> None:
    state["log"] = (state.get("log") or [])[-200:] + [text]
    log(text)


def advance(client: KaggleClient, staged: list[StagedKernel], state: dict, *, start: bool, work_dir: str | Path,
            dataset: Path | None = None, helpers_sha256: str | None = None, save: Callable[[dict], None] = lambda s: None,
            log: Callable[[str], None] = print, dataset_poll_s: float = 10.0) -> Outcome:
    """One pass over the chain (see the module docstring); `state` is updated in place and `save`d
    after every change. `start`: a new chain may begin (manual dispatch, a tag, `make push`):
    changed kernels are pushed, the helper dataset first when its digest changed. Without it
    (a scheduled run) only a chain already under way moves on, and only as it was dispatched.
    Raises ChainFailed when a kernel ended in error (the state records it)."""
    by_ref = {k.ref: k.key for k in staged}
    pushed: list[str] = []
    if helpers_sha256 and state.get("helpers_sha256") != helpers_sha256:
        if not start:
            if state.get("active"):
                raise ChainFailed("the helper package changed since this chain was dispatched; dispatch again "
                                  "(a scheduled run only resumes the chain as it was pushed)")
            return Outcome(False, idle=True)
        if dataset is not None:
            ref = f"{state['owner']}/{HELPERS_SLUG}"
            client.push_dataset(dataset, notes=f"guie_nb helper package {helpers_sha256[:12]}")
            _note(state, log, f"pushed dataset {ref}: {client.wait_dataset(ref, poll_s=dataset_poll_s)}")
        state["helpers_sha256"] = helpers_sha256
        save(state)
    for k in staged:
        cur = state["kernels"].get(k.key)
        inputs = _inputs(k, by_ref, state)
        changed = cur is None or cur["content_sha256"] != k.content_sha256 or cur["inputs"] != inputs
        retry = cur is not None and cur["status"] == "failed" and start
        if changed or retry:
            if not start and not state.get("active"):
                return Outcome(False, idle=True, pushed=tuple(pushed))
            if not start and changed and cur is not None and cur["content_sha256"] != k.content_sha256:
                raise ChainFailed(f"{k.key}: the staged notebook differs from the one this chain was dispatched "
                                  "with; dispatch again")
            r = client.push_kernel(k.folder)
            state["kernels"][k.key] = {
                "ref": k.ref, "version": r.get("version"), "run_id": k.run_id, "content_sha256": k.content_sha256,
                "inputs": inputs, "internet": md.flag(k.meta, "enable_internet"), "status": "pushed", "failure": None}
            state["active"] = True
            pushed.append(k.key)
            _note(state, log, f"pushed {k.ref} version {r.get('version')} (run {k.run_id}) {r.get('url') or ''}".rstrip())
            save(state)
            return Outcome(False, waiting_for=f"{k.key}: pushed", pushed=tuple(pushed))
        if cur["status"] == "complete":
            continue
        if cur["status"] == "failed":
            raise ChainFailed(f"{k.key} (version {cur['version']}) failed: {cur['failure']}; dispatch again to retry")
        folder = Path(work_dir) / "status" / k.key.replace(":", "-").replace("#", "-")
        st = client.run_status(k.ref, cur["run_id"], folder)
        if st["status"] == "COMPLETE":
            cur["status"] = "complete"
            _note(state, log, f"{k.ref} version {cur['version']}: COMPLETE (run {cur['run_id']})")
            save(state)
            continue
        if st["status"] in ("ERROR", "CANCEL_ACKNOWLEDGED", "CANCEL_REQUESTED"):
            cur["status"], cur["failure"] = "failed", f"{st['status']}: {st.get('failure_message') or ''}".rstrip(": ")
            state["active"] = False
            _note(state, log, f"{k.ref} version {cur['version']} ended {cur['failure']}")
            save(state)
            raise ChainFailed(f"{k.ref} ended {cur['failure']}; not pushing the kernels that read its output")
        why = st["status"]
        if why == "STALE":
            why = (f"STALE (Kaggle reports {st['reported']}, but the output is from run {st['found_run_id']!r}, "
                   f"not {cur['run_id']!r})")
        return Outcome(False, waiting_for=f"{k.key}: {why}", pushed=tuple(pushed))
    return Outcome(True, pushed=tuple(pushed))


def run(client: KaggleClient, staged: list[StagedKernel], state: dict, *, start: bool, wait: bool, work_dir: str | Path,
        poll_s: float = 60.0, max_polls: int = 100_000, max_stale: int = 60, log: Callable[[str], None] = print,
        **kwargs) -> Outcome:
    """`advance` until the chain is done (`wait`), or once. Raises ChainFailed (a kernel failed, or
    a pushed run stayed STALE for `max_stale` polls in a row: its status never caught up)."""
    stale = 0
    for _ in range(max_polls):
        out = advance(client, staged, state, start=start, work_dir=work_dir, log=log, **kwargs)
        if out.done or out.idle or not wait:
            return out
        stale = stale + 1 if "STALE" in (out.waiting_for or "") else 0
        if stale >= max_stale:
            raise ChainFailed(f"stale status: {out.waiting_for} for {stale} polls in a row")
        log(f"waiting for {out.waiting_for}")
        kwargs.pop("dataset", None)  # pushed at most once per call
        client.sleep(poll_s)
    raise ChainFailed(f"the chain is still waiting for {out.waiting_for} after {max_polls} polls")


def _require(cond: bool, reason: str) -> None:
    if not cond:
        raise SubmitRefused(f"not submitting: {reason}")


def check_submittable(client: KaggleClient, state: dict, work_dir: str | Path) -> dict:
    """Download and check what `submit` would submit; returns the submit kernel's report. Refuses
    (SubmitRefused, naming the reason) unless: the submit kernel's pushed version completed, with
    internet off; its output is from that run (`guie_run.json`); its `submit_report.json` passed,
    names that run and the export's pushed run; `submission.zip` matches it (size, sha256, a readable
    zip of the report's format); and the export's own `verification.json` passed for that sha256."""
    from guie_nb.export.handoff import HandoffError, check_zip_against, read_report

    sub = state["kernels"].get(SUBMIT_NOTEBOOK)
    exp = state["kernels"].get(EXPORT_NOTEBOOK)
    _require(sub is not None, f"{SUBMIT_NOTEBOOK} was never pushed from this chain state (run `make push` first)")
    _require(sub["status"] == "complete", f"{sub['ref']} version {sub['version']} has not completed "
             f"(state: {sub['status']}{'; ' + sub['failure'] if sub.get('failure') else ''})")
    _require(sub["internet"] is False, f"{sub['ref']} has internet on; the competition runs submissions offline")
    _require(exp is not None and exp["status"] == "complete", f"{EXPORT_NOTEBOOK} has not completed in this chain")
    st = client.run_status(sub["ref"], sub["run_id"], Path(work_dir) / "status" / SUBMIT_NOTEBOOK)
    _require(st["status"] == "COMPLETE", f"{sub['ref']}'s latest run is {st['status']}, not the pushed run "
             f"{sub['run_id']!r} complete (found run {st.get('found_run_id')!r})")
    dest = Path(work_dir) / "submit-output"
    for f in (SUBMISSION, SUBMIT_REPORT, RUN_MARKER):
        (dest / f).unlink(missing_ok=True)
    files = {f.name for f in client.output(sub["ref"], dest, r"^(submission\.zip|submit_report\.json|guie_run\.json)$")}
    _require(RUN_MARKER in files, f"{sub['ref']}'s output has no {RUN_MARKER}")
    _require(json.loads((dest / RUN_MARKER).read_text()).get("run_id") == sub["run_id"],
             f"{sub['ref']}'s output is not from the pushed run {sub['run_id']!r}")
    try:
        report = read_report(dest / SUBMIT_REPORT, f"{sub['ref']}'s submit report")
        _require(report.get("passed") is True, f"{sub['ref']}'s submit report did not pass")
        _require(report.get("run_id") == sub["run_id"], f"{sub['ref']}'s submit report is from run "
                 f"{report.get('run_id')!r}, not the pushed version's {sub['run_id']!r}")
        _require(report.get("export_run_id") == exp["run_id"], f"{sub['ref']} handed over the zip of export run "
                 f"{report.get('export_run_id')!r}, not this chain's {exp['run_id']!r}")
        check_zip_against(dest / SUBMISSION, report, f"{sub['ref']}'s {SUBMISSION}")
        vdest = Path(work_dir) / "export-report"
        (vdest / VERIFICATION_REPORT).unlink(missing_ok=True)
        client.output(exp["ref"], vdest, rf"^{VERIFICATION_REPORT.replace('.', '[.]')}$")
        verification = read_report(vdest / VERIFICATION_REPORT, f"{exp['ref']}'s verification report")
    except HandoffError as err:
        raise SubmitRefused(f"not submitting: {err}") from None
    _require(verification.get("passed") is True, f"{exp['ref']}'s verification failed: {verification.get('failures')}")
    _require(verification.get("run_id") == exp["run_id"], f"{exp['ref']}'s verification report is from run "
             f"{verification.get('run_id')!r}, not {exp['run_id']!r}")
    _require(verification.get("sha256") == report["sha256"], f"the zip {sub['ref']} hands over is not the one "
             f"{exp['ref']} verified (sha256 differs)")
    return report


def submit(client: KaggleClient, state: dict, *, work_dir: str | Path, message: str,
           competition: str = COMPETITION, force: bool = False, save: Callable[[dict], None] = lambda s: None,
           log: Callable[[str], None] = print) -> dict:
    """Submit the submit kernel's pushed version (`check_submittable` first); refuses to submit the
    same version twice unless `force`. Records the submission in `state`; returns it."""
    report = check_submittable(client, state, work_dir)
    sub = state["kernels"][SUBMIT_NOTEBOOK]
    done = state.get("submission") or {}
    _require(force or done.get("version") != sub["version"] or done.get("ref") != sub["ref"],
             f"{sub['ref']} version {sub['version']} was already submitted (pass --force to submit it again)")
    result = client.submit(competition, sub["ref"], sub["version"], SUBMISSION, message)
    state["submission"] = {"ref": sub["ref"], "version": sub["version"], "run_id": sub["run_id"], "message": message,
                           "sha256": report["sha256"], "result": result}
    state["active"] = False
    _note(state, log, f"submitted {sub['ref']} version {sub['version']} to {competition}: "
                      f"{result.get('message') or result.get('ref')}")
    save(state)
    return state["submission"]
