"""`make push` then `make submit` against a fake Kaggle on 127.0.0.1, through the real client.

The fake "runs" each pushed kernel (tests/_kaggle_helpers.py): its output carries the run id baked
into the pushed notebook; the export's output is a verified zip with `verification.json`, the
submit kernel's is what the real `guie_nb.export.handoff.hand_over` makes of the export's output.
Faults are injected: a stale COMPLETE after a push, broken downloads, a failed dataset upload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from _kaggle_helpers import FakeKaggle, basic_auth, client_env
from _kaggle_helpers import assert_no_key as _assert_no_key
from guie_nb.kaggle import chain
from guie_nb.kaggle.client import Credentials, KaggleClient
from guie_nb.kaggle.stage import stage_kernels

REPO = Path(__file__).resolve().parents[1]
USER, KEY = "alice", "k3y-0f-al1ce-5ecret"


def assert_no_key(*texts: str, folders=()) -> None:
    _assert_no_key(USER, KEY, *texts, folders=folders)
SLUGS = ["guie-nb-01-data-prep", "guie-nb-02-train-tpu", "guie-nb-03-finetune", "guie-nb-04-export",
         "guie-nb-05-submit"]


def notebook_runner(slug: str, staged: dict, fake: FakeKaggle) -> dict[str, bytes]:
    """What each kernel leaves in /kaggle/working, as the notebooks write it."""
    from guie_nb.export.handoff import hand_over, write_verification

    files = {"guie_run.json": json.dumps({"run_id": staged.get("run_id"), "notebook": staged.get("notebook")}).encode()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if slug == "guie-nb-04-export":
            zpath = tmp / "submission.zip"
            with zipfile.ZipFile(zpath, "w") as zf:
                zf.writestr("saved_model.pb", b"model of run " + staged["run_id"].encode())
                zf.writestr("variables/variables.index", b"index")
            write_verification(zpath, passed=True, fmt="saved_model", verified_in="tf-2.6.4 (fake)",
                               verified_images=12, run_id=staged["run_id"])
            files |= {n: (tmp / n).read_bytes() for n in ("submission.zip", "verification.json")}
        elif slug == "guie-nb-05-submit":
            export = tmp / "export"
            export.mkdir()
            for name, data in fake.outputs.get("guie-nb-04-export", {}).items():
                (export / name).write_bytes(data)
            hand_over(export, tmp / "out", run_id=staged["run_id"])
            files |= {n: (tmp / "out" / n).read_bytes() for n in ("submission.zip", "submit_report.json")}
    return files


@pytest.fixture
def fake():
    with FakeKaggle() as f:
        f.runner = notebook_runner
        yield f


@pytest.fixture
def env(fake, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    return client_env(fake, home, USER, KEY)


def kaggle(args: list[str], env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, "-m", "guie_nb.kaggle", *args], env=full, capture_output=True, text=True,
                          timeout=600, cwd=REPO)




def pushed_run_ids(fake) -> dict[str, str]:
    from _kaggle_helpers import staged_of

    return {r["body"]["slug"].split("/")[1]: staged_of(r["body"])["run_id"] for r in fake.calls("SaveKernel")}


def test_push_then_submit_submits_the_offline_kernel_version_pushed_in_this_run(fake, env, tmp_path):
    out = tmp_path / "stage"
    fake.versions["guie-nb-05-submit"] = 6  # earlier versions exist: the submitted one must be this push's
    fake.stale_polls["guie-nb-02-train-tpu"] = 2  # status reports the previous run's COMPLETE twice
    push = kaggle(["push", "--out", str(out), "--poll", "0"], env)
    assert push.returncode == 0, push.stderr
    assert [r["body"]["slug"].split("/")[1] for r in fake.calls("SaveKernel")] == SLUGS
    # the stale COMPLETE was not taken: the chain waited, and 03 went up only after 02's run finished
    assert push.stdout.count("waiting for 02_train_tpu: STALE") == 2, push.stdout
    polls = [r["body"]["kernelSlug"] for r in fake.calls("GetKernelSessionStatus")]
    assert polls.count("guie-nb-02-train-tpu") == 3
    state = json.loads((out / "chain_state.json").read_text())
    assert all(k["status"] == "complete" for k in state["kernels"].values())

    fake.broken[("guie-nb-05-submit", "submission.zip")] = 500  # a broken download: refused, by name
    broken = kaggle(["submit", "--out", str(out), "--message", "first try"], env)
    assert broken.returncode == 1 and "broken download from alice/guie-nb-05-submit" in broken.stderr \
        and "HTTP 500" in broken.stderr, broken.stderr
    assert not fake.calls("CreateCodeSubmission")
    fake.broken.clear()
    sub = kaggle(["submit", "--out", str(out), "--message", "first try"], env)
    assert sub.returncode == 0, sub.stderr
    (req,) = [r["body"] for r in fake.calls("CreateCodeSubmission")]
    assert req["competitionName"] == "google-universal-image-embedding"
    assert req["kernelSlug"] == "guie-nb-05-submit" and req["kernelVersion"] == 7  # this push's version
    assert req["fileName"] == "submission.zip" and req["submissionDescription"] == "first try"
    submitted = [r["body"] for r in fake.calls("SaveKernel")][-1]
    assert submitted["slug"] == f"{USER}/guie-nb-05-submit" and submitted["enableInternet"] is False
    state = json.loads((out / "chain_state.json").read_text())
    assert state["submission"]["version"] == 7
    assert state["submission"]["run_id"] == pushed_run_ids(fake)["guie-nb-05-submit"]
    assert "submitted alice/guie-nb-05-submit version 7" in sub.stdout
    assert_no_key(push.stdout, push.stderr, broken.stdout, broken.stderr, sub.stdout, sub.stderr, folders=[out])

    again = kaggle(["submit", "--out", str(out)], env)  # the same version is not submitted twice
    assert again.returncode == 1 and "already submitted" in again.stderr
    assert len(fake.calls("CreateCodeSubmission")) == 1


@pytest.mark.slow  # seven refused submissions, each a dozen client processes (about a minute)
@pytest.mark.extended  # make test keeps the accepted path and a refused re-submit (test above)
def test_broken_downloads_and_other_runs_refuse_the_submission_by_name(fake, env, tmp_path):
    out = tmp_path / "stage"
    assert kaggle(["push", "--out", str(out), "--poll", "0"], env).returncode == 0
    good = dict(fake.outputs["guie-nb-05-submit"])
    with tempfile.TemporaryDirectory() as tmp:  # a valid zip, but not the verified one
        other = Path(tmp) / "other.zip"
        with zipfile.ZipFile(other, "w") as zf:
            zf.writestr("saved_model.pb", b"another model")
        other_zip = other.read_bytes()
    report = json.loads(good["submit_report.json"])
    faults = [  # (what to break, the reason submit must give)
        ({("guie-nb-05-submit", "submission.zip"): 500}, {}, "HTTP 500"),
        ({("guie-nb-05-submit", "submission.zip"): 404}, {}, "HTTP 404"),
        ({("guie-nb-05-submit", "submission.zip"): b"<html>Service unavailable</html>"}, {}, "not a readable zip"),
        ({}, {"submission.zip": other_zip}, "the report says"),
        ({}, {"submit_report.json": json.dumps({**report, "run_id": "older-run"}).encode()},
         "submit report is from run 'older-run'"),
        ({}, {"guie_run.json": b'{"run_id": "older-run"}'}, "STALE"),
    ]
    for broken, replaced, reason in faults:
        fake.broken = dict(broken)
        fake.outputs["guie-nb-05-submit"] = {**good, **replaced}
        sub = kaggle(["submit", "--out", str(out)], env)
        assert sub.returncode == 1 and reason in sub.stderr, (reason, sub.stderr)
        assert_no_key(sub.stdout, sub.stderr, folders=[out])
    assert not fake.calls("CreateCodeSubmission")
    fake.broken, fake.outputs["guie-nb-05-submit"] = {}, good
    assert kaggle(["submit", "--out", str(out)], env).returncode == 0  # the intact output goes through
    assert len(fake.calls("CreateCodeSubmission")) == 1


def test_submit_refuses_without_a_completed_chain(fake, env, tmp_path):
    out = tmp_path / "stage"
    sub = kaggle(["submit", "--out", str(out)], env)
    assert sub.returncode == 1 and "run `make push` first" in sub.stderr
    fake.script("GetKernelSessionStatus", (200, {"status": "COMPLETE"}), (200, {"status": "COMPLETE"}),
                (200, {"status": "COMPLETE"}), (200, {"status": "ERROR", "failureMessage": "export rejected"}))
    push = kaggle(["push", "--out", str(out), "--poll", "0", "--no-dataset"], env)
    assert push.returncode == 1 and "guie-nb-04-export ended ERROR: export rejected" in push.stderr
    sub = kaggle(["submit", "--out", str(out)], env)
    assert sub.returncode == 1 and "05_submit was never pushed" in sub.stderr, sub.stderr
    assert kaggle(["submit", "--out", str(out), "--if-complete"], env).returncode == 0
    assert not fake.calls("CreateCodeSubmission")


def test_a_failed_dataset_upload_creates_no_version(fake, env, tmp_path):
    fake.upload_status["guie_nb.zip"] = 500
    push = kaggle(["push", "--out", str(tmp_path / "stage"), "--poll", "0"], env)
    assert push.returncode == 1 and "the upload of 'guie_nb.zip' failed; no dataset version was created" in push.stderr
    assert fake.calls("StartBlobUpload")
    assert not fake.calls("CreateDataset") and not fake.calls("CreateDatasetVersion") and not fake.calls("SaveKernel")


# -- the state machine, one pass at a time (CI: dispatch, then scheduled runs) ---------------


def _client() -> KaggleClient:
    return KaggleClient(Credentials(USER, KEY), sleep=lambda s: None)


def _stage(out: Path, notebook_dir: Path = REPO / "notebooks"):
    return stage_kernels(out, USER, "demo", notebook_dir, REPO / "kernel-metadata")


def test_resume_from_a_saved_state_pushes_the_next_kernel_then_only_what_changed(fake, env, tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    state_file = tmp_path / "ci" / "chain_state.json"
    logs = []

    def one_pass(start: bool, notebook_dir=REPO / "notebooks") -> chain.Outcome:
        # a fresh process each time in CI: stage again, load the saved state, one pass, save
        staged = _stage(tmp_path / "stage", notebook_dir)
        state = chain.load_state(state_file, "demo", USER)
        out = chain.advance(_client(), staged, state, start=start, work_dir=tmp_path / "work",
                            save=lambda s: chain.save_state(s, state_file), log=logs.append)
        chain.save_state(state, state_file)
        return out

    assert one_pass(start=False).idle and not fake.calls("SaveKernel")  # a schedule starts nothing
    assert one_pass(start=True).pushed == ("01_data_prep",)  # dispatch: the first kernel
    fake.stale_polls["guie-nb-01-data-prep"] = 1
    out = one_pass(start=False)  # the schedule finds a stale COMPLETE: waits, pushes nothing
    assert out.waiting_for.startswith("01_data_prep: STALE") and out.pushed == ()
    for nb in ("02_train_tpu", "03_finetune", "04_export", "05_submit"):
        assert one_pass(start=False).pushed == (nb,)  # 01's run complete (its run id): the next one goes up
    assert one_pass(start=False).done
    state = json.loads(state_file.read_text())
    assert [state["kernels"][nb]["version"] for nb in ("01_data_prep", "05_submit")] == [1, 1]
    assert state["kernels"]["05_submit"]["inputs"] == {f"{USER}/guie-nb-04-export": 1}
    assert chain.submit(_client(), state, work_dir=tmp_path / "work", message="ci")["version"] == 1

    # a new dispatch with nothing changed pushes nothing; a changed export re-pushes 04, then 05
    # (its input changed), and leaves 01-03 alone
    n = len(fake.calls("SaveKernel"))
    assert one_pass(start=True).done and len(fake.calls("SaveKernel")) == n
    changed = tmp_path / "notebooks"
    changed.mkdir()
    for f in (REPO / "notebooks").glob("*.py"):
        text = f.read_text()
        if f.stem == "04_export":
            text = text.replace('flip_tta = False', 'flip_tta = True', 1)
        (changed / f.name).write_text(text)
    assert one_pass(start=True, notebook_dir=changed).pushed == ("04_export",)
    assert one_pass(start=False, notebook_dir=changed).pushed == ("05_submit",)
    assert one_pass(start=False, notebook_dir=changed).done
    assert [r["body"]["slug"].split("/")[1] for r in fake.calls("SaveKernel")][n:] == SLUGS[3:]
    state = json.loads(state_file.read_text())
    assert state["kernels"]["05_submit"]["version"] == 2 and state["kernels"]["02_train_tpu"]["version"] == 1


def test_a_status_that_stays_stale_fails_by_name(fake, env, tmp_path, monkeypatch):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    fake.stale_polls["guie-nb-01-data-prep"] = 100
    state = chain.new_state("demo", USER)
    with pytest.raises(chain.ChainFailed, match="stale status: 01_data_prep: STALE"):
        chain.run(_client(), _stage(tmp_path / "stage"), state, start=True, wait=True, work_dir=tmp_path / "w",
                  poll_s=0, max_stale=3, log=lambda m: None)
    assert len(fake.calls("SaveKernel")) == 1 and state["kernels"]["01_data_prep"]["status"] == "pushed"


def test_a_preset_with_stages_pushes_each_stage_after_the_one_before(fake, env, tmp_path, monkeypatch):
    """One kernel per training stage, in chain order, each pushed once the stage before completed
    (its run id); the chain state keeps one entry per kernel key; a changed last stage re-pushes
    only itself and what reads it."""
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    state_file = tmp_path / "chain_state.json"

    def one_run(notebook_dir=REPO / "notebooks"):
        staged = stage_kernels(tmp_path / "stage", USER, "demo_stages", notebook_dir, REPO / "kernel-metadata")
        state = chain.load_state(state_file, "demo_stages", USER)
        out = chain.run(_client(), staged, state, start=True, wait=True, work_dir=tmp_path / "w", poll_s=0,
                        log=lambda m: None, save=lambda s: chain.save_state(s, state_file))
        return out, state

    fake.stale_polls["guie-nb-03-finetune-backbone-80"] = 1  # a stale COMPLETE of a stage is not taken
    out, state = one_run()
    assert out.done
    stages = ["guie-nb-02-train-tpu-train-64", "guie-nb-03-finetune-backbone-80", "guie-nb-03-finetune-products"]
    assert [r["body"]["slug"].split("/")[1] for r in fake.calls("SaveKernel")] == [SLUGS[0], *stages, *SLUGS[3:]]
    assert list(state["kernels"]) == ["01_data_prep", "02_train_tpu:train-64", "03_finetune:backbone-80",
                                      "03_finetune:products", "04_export", "05_submit"]
    assert state["kernels"]["03_finetune:products"]["inputs"] == {
        f"{USER}/guie-nb-01-data-prep": 1, f"{USER}/guie-nb-03-finetune-backbone-80": 1}
    polls = [r["body"]["kernelSlug"] for r in fake.calls("GetKernelSessionStatus")]
    assert polls.count("guie-nb-03-finetune-backbone-80") == 2
    assert chain.submit(_client(), state, work_dir=tmp_path / "w", message="stages")["version"] == 1

    n = len(fake.calls("SaveKernel"))
    changed = tmp_path / "notebooks"
    changed.mkdir()
    for f in (REPO / "notebooks").glob("*.py"):  # the fine-tune notebook changes: every 03 stage re-runs
        text = f.read_text()
        (changed / f.name).write_text(text.replace("# ## Continue training", "# ## Continue training (v2)", 1)
                                      if f.stem == "03_finetune" else text)
    out, state = one_run(changed)
    assert out.done
    assert [r["body"]["slug"].split("/")[1] for r in fake.calls("SaveKernel")][n:] == [*stages[1:], *SLUGS[3:]]
