"""Push, poll and download through the real `kaggle` client against a fake Kaggle on 127.0.0.1.

The fake (tests/_kaggle_helpers.py) records every request; the tests assert the request bodies
(slug, notebook text with the baked parameters, sources, accelerator, privacy), the 401/403,
429 and 5xx paths, and that the key never shows up in any output, log or staged file.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from _kaggle_helpers import SUBMISSION_BYTES, FakeKaggle, basic_auth, client_env
from _kaggle_helpers import assert_no_key as _assert_no_key
from guie_nb.kaggle.client import AuthError, KaggleClient, KaggleError
from guie_nb.kaggle.credentials import Credentials, CredentialsError, load_credentials

REPO = Path(__file__).resolve().parents[1]
USER, KEY = "alice", "k3y-0f-al1ce-5ecret"


def assert_no_key(*texts: str, folders=()) -> None:
    _assert_no_key(USER, KEY, *texts, folders=folders)


@pytest.fixture
def fake():
    with FakeKaggle() as f:
        yield f


@pytest.fixture
def env(fake, tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    values = client_env(fake, home, USER, KEY)
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    return values


def run_script(name: str, args: list[str], env: dict) -> subprocess.CompletedProcess:
    full = {**os.environ, **env, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run([sys.executable, str(REPO / "scripts" / name), *args], env=full,
                          capture_output=True, text=True, timeout=300, cwd=REPO)




def notebook_text(body: dict) -> str:
    nb = json.loads(body["text"])
    return "\n".join(c["source"] for c in nb["cells"])


def test_push_all_stages_pushes_dataset_and_chains_kernels(fake, env, tmp_path):
    fake.script("GetKernelSessionStatus", (200, {"status": "RUNNING"}), (200, {"status": "COMPLETE"}))
    # new dataset: not found, created, then processed on the second poll
    fake.script("GetDatasetStatus", (404, {"code": 404, "message": "not found"}),
                (404, {"code": 404, "message": "not found"}), (200, {"status": "BLOBS_RECEIVED"}))
    stage = tmp_path / "stage"
    proc = run_script("kaggle_push.py", ["--preset", "seed_recipe", "--out", str(stage), "--poll", "0"], env)
    assert proc.returncode == 0, proc.stderr
    assert_no_key(proc.stdout, proc.stderr, folders=[stage])

    # the helper package went up as a dataset first, its folder zipped by the client
    order = [r["endpoint"] for r in fake.requests if r["method"] == "POST"]
    assert order.index("CreateDataset") < order.index("SaveKernel")
    # the kernels are pushed once the dataset version is processed (polled until READY)
    assert order[order.index("CreateDataset") + 1:order.index("SaveKernel")] == ["GetDatasetStatus"] * 2
    create = fake.calls("CreateDataset")[0]["body"]
    assert create["ownerSlug"] == USER and create["slug"] == "guie-nb-helpers" and create["isPrivate"] is True
    with zipfile.ZipFile(io.BytesIO(fake.uploads["guie_nb.zip"])) as zf:
        names = set(zf.namelist())
    assert {"__init__.py", "kaggle/layout.py", "notebook_build.py"} <= names

    saves = [r["body"] for r in fake.calls("SaveKernel")]
    assert [b["slug"] for b in saves] == [f"{USER}/guie-nb-01-data-prep", f"{USER}/guie-nb-02-train-tpu",
                                          f"{USER}/guie-nb-03-finetune", f"{USER}/guie-nb-04-export",
                                          f"{USER}/guie-nb-05-submit"]
    # the export installs the scorer runtimes; the submitted kernel runs offline
    assert [b["enableInternet"] for b in saves] == [False, False, False, True, False]
    assert "imagenet-object-localization-challenge" in saves[0]["competitionDataSources"]
    for b in saves:
        assert b["isPrivate"] is True
        assert b["language"] == "python" and b["kernelType"] == "notebook"
        if b is not saves[0]:  # data-prep reads only the raw data
            assert b["competitionDataSources"][0] == "google-universal-image-embedding"
        assert f"{USER}/guie-nb-helpers" in b["datasetDataSources"]
        assert "dockerImage" not in b
        assert "guie-nb-helpers/guie_nb" in notebook_text(b)  # the bootstrap cell
    first, train, finetune, export, submit = saves
    assert first["newTitle"] == "GUIE nb 01 data prep" and "machineShape" not in first
    assert 'out_dir = "/kaggle/working/data"' in notebook_text(first)
    assert train["machineShape"] == "TpuV5E8" and train["enableTpu"] is True and train["enableGpu"] is False
    assert train["kernelDataSources"] == [f"{USER}/guie-nb-01-data-prep"]
    assert train["modelDataSources"] == ["keras/clip/keras/clip_vit_h_14_laion2b_s32b_b79k/3"]
    assert 'data_dir = "/kaggle/input/guie-nb-01-data-prep/data"' in notebook_text(train)
    assert 'out_dir = "/kaggle/working/train"' in notebook_text(train)
    assert finetune["machineShape"] == "TpuV5E8"
    assert 'init_dir = "/kaggle/input/guie-nb-02-train-tpu/train"' in notebook_text(finetune)
    assert export["kernelDataSources"][-1] == f"{USER}/guie-nb-03-finetune"
    # a ViT-H export would outrun a CPU kernel's session: the preset stages it on a T4 (KERNEL_MACHINES)
    assert export["machineShape"] == "NvidiaTeslaT4" and export["enableGpu"] is True and export["enableTpu"] is False
    assert 'model_dir = "/kaggle/input/guie-nb-03-finetune/finetune"' in notebook_text(export)
    assert submit["kernelDataSources"] == [f"{USER}/guie-nb-04-export"] and "machineShape" not in submit
    assert 'export_dir = "/kaggle/input/guie-nb-04-export"' in notebook_text(submit)
    assert 'out_dir = "/kaggle/working"' in notebook_text(submit)  # submission.zip at the top of the output

    # each kernel is pushed only after the one before it completed (01 was polled twice), and
    # each COMPLETE was taken only with the pushed run's id in the output (guie_run.json)
    statuses = [r["body"]["kernelSlug"] for r in fake.calls("GetKernelSessionStatus")]
    assert statuses == ["guie-nb-01-data-prep", "guie-nb-01-data-prep", "guie-nb-02-train-tpu",
                        "guie-nb-03-finetune", "guie-nb-04-export", "guie-nb-05-submit"]
    listed = [r["body"]["kernelSlug"] for r in fake.calls("ListKernelSessionOutput")]
    assert listed == statuses[1:]
    assert "chain complete" in proc.stdout
    posts = [(r["endpoint"], (r["body"] or {}).get("slug") or (r["body"] or {}).get("kernelSlug"))
             for r in fake.requests if r["method"] == "POST" and "Kernel" in r["endpoint"]]
    assert posts.index(("GetKernelSessionStatus", "guie-nb-01-data-prep")) < \
        posts.index(("SaveKernel", f"{USER}/guie-nb-02-train-tpu"))
    assert all(r["headers"].get("Authorization") == basic_auth(USER, KEY)
               for r in fake.requests if r["method"] == "POST")


def test_chain_stops_when_a_kernel_fails(fake, env, tmp_path):
    fake.script("GetKernelSessionStatus", (200, {"status": "ERROR", "failureMessage": "out of memory"}))
    proc = run_script("kaggle_push.py", ["--out", str(tmp_path / "s"), "--poll", "0", "--no-dataset"], env)
    assert proc.returncode == 1
    assert "guie-nb-01-data-prep ended ERROR: out of memory" in proc.stderr
    assert len(fake.calls("SaveKernel")) == 1 and not fake.calls("CreateDataset")


def test_status_and_output_scripts(fake, env, tmp_path):
    fake.script("GetKernelSessionStatus", (200, {"status": "RUNNING"}))
    proc = run_script("kaggle_status.py", [], env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"{USER}/guie-nb-01-data-prep: RUNNING", f"{USER}/guie-nb-02-train-tpu: COMPLETE",
                                        f"{USER}/guie-nb-03-finetune: COMPLETE", f"{USER}/guie-nb-04-export: COMPLETE",
                                        f"{USER}/guie-nb-05-submit: COMPLETE"]
    assert [r["body"] for r in fake.calls("GetKernelSessionStatus")][1] == \
        {"userName": USER, "kernelSlug": "guie-nb-02-train-tpu"}

    dest = tmp_path / "out"
    proc = run_script("kaggle_output.py", ["04_export", "--dest", str(dest)], env)
    assert proc.returncode == 0, proc.stderr
    listing = fake.calls("ListKernelSessionOutput")[0]["body"]
    assert listing == {"userName": USER, "kernelSlug": "guie-nb-04-export"}
    assert (dest / "guie-nb-04-export" / "submission.zip").read_bytes() == SUBMISSION_BYTES
    assert_no_key(proc.stdout, proc.stderr, folders=[dest])

    fake.files.clear()
    fake.script("ListKernelSessionOutput", (200, {"files": [], "log": "[]"}))
    proc = run_script("kaggle_output.py", ["04_export", "--dest", str(tmp_path / "none")], env)
    assert proc.returncode == 1 and "no submission.zip" in proc.stderr


def test_401_names_the_credentials_and_never_the_key(fake, env, tmp_path):
    fake.script("SaveKernel", (401, {"code": 401, "message": "Unauthenticated"}))
    proc = run_script("kaggle_push.py", ["--out", str(tmp_path / "s"), "--no-dataset"], env)
    assert proc.returncode == 1
    assert "refused the credentials of user 'alice' (HTTP 401" in proc.stderr
    assert "KAGGLE_USERNAME/KAGGLE_KEY" in proc.stderr
    assert len(fake.calls("SaveKernel")) == 1  # auth failures are not retried
    assert_no_key(proc.stdout, proc.stderr, folders=[tmp_path / "s"])


def test_403_on_status_is_an_auth_error(fake, env):
    fake.script("GetKernelSessionStatus", (403, {"code": 403, "message": "Permission denied"}))
    with pytest.raises(AuthError, match="HTTP 403"):
        KaggleClient(Credentials(USER, KEY)).status(f"{USER}/guie-nb-02-train-tpu")


@pytest.fixture
def staged(tmp_path):
    from guie_nb.kaggle.stage import stage_kernels

    return stage_kernels(tmp_path / "stage", USER, "demo", REPO / "notebooks", REPO / "kernel-metadata")


def test_429_and_503_are_retried_with_backoff(fake, env, staged, caplog):
    fake.script("SaveKernel", (429, {"code": 429, "message": "Too many requests"}),
                (503, {"code": 503, "message": "Unavailable"}))
    sleeps = []
    client = KaggleClient(Credentials(USER, KEY), retries=3, backoff_s=1.5, sleep=sleeps.append)
    with caplog.at_level(logging.WARNING, logger="guie_nb.kaggle.client"):
        result = client.push_kernel(staged[1].folder)
    assert result["ref"].endswith("guie-nb-02-train-tpu")
    assert sleeps == [1.5, 3.0] and len(fake.calls("SaveKernel")) == 3
    assert "HTTP 429" in caplog.text and "HTTP 503" in caplog.text
    assert_no_key(caplog.text)


def test_500_fails_clearly_after_the_retries(fake, env, staged, capfd):
    fake.script("SaveKernel", *[(500, {"code": 500, "message": "Internal error"})] * 3)
    sleeps = []
    client = KaggleClient(Credentials(USER, KEY), retries=2, backoff_s=1.0, sleep=sleeps.append)
    with pytest.raises(KaggleError, match=r"kept failing \(HTTP 500\) after 2 retries"):
        client.push_kernel(staged[0].folder)
    assert sleeps == [1.0, 2.0] and len(fake.calls("SaveKernel")) == 3
    out, err = capfd.readouterr()
    assert_no_key(out, err)


def test_dropped_sources_fail_the_push(fake, env, staged):
    fake.script("SaveKernel", (200, {"ref": "x", "url": "u", "invalidKernelSources": [f"{USER}/guie-nb-01-data-prep"]}))
    with pytest.raises(KaggleError, match="dropped invalid sources"):
        KaggleClient(Credentials(USER, KEY)).push_kernel(staged[1].folder)


def test_invalid_metadata_stops_before_any_request(fake, env, tmp_path):
    tdir = tmp_path / "templates"
    tdir.mkdir()
    for f in (REPO / "kernel-metadata").glob("*.json"):
        meta = json.loads(f.read_text())
        if f.stem == "02_train_tpu":
            meta["docker_image"] = "gcr.io/kaggle-gpu-images/python"
        (tdir / f.name).write_text(json.dumps(meta))
    proc = run_script("kaggle_push.py", ["--out", str(tmp_path / "s"), "--metadata-dir", str(tdir)], env)
    assert proc.returncode == 2 and "must not pin docker_image" in proc.stderr
    assert fake.requests == []


def test_dry_run_needs_no_credentials(tmp_path):
    env = {"HOME": str(tmp_path), "KAGGLE_USERNAME": "", "KAGGLE_KEY": "", "KAGGLE_CONFIG_DIR": str(tmp_path / "none")}
    proc = run_script("kaggle_stage.py", ["--owner", "bob", "--out", str(tmp_path / "s")], env)
    assert proc.returncode == 0, proc.stderr
    assert "nothing pushed" in proc.stdout
    assert json.loads((tmp_path / "s" / "guie-nb-03-finetune" / "kernel-metadata.json").read_text())["id"] == \
        "bob/guie-nb-03-finetune"
    proc = run_script("kaggle_push.py", ["--owner", "bob", "--out", str(tmp_path / "s")], env)
    assert proc.returncode == 2 and "no Kaggle credentials" in proc.stderr


def test_credentials_from_env_then_kaggle_json(tmp_path):
    warnings = []
    creds = load_credentials({"KAGGLE_USERNAME": USER, "KAGGLE_KEY": KEY}, warn=warnings.append)
    assert (creds.username, creds.key, creds.source) == (USER, KEY, "environment")
    assert KEY not in repr(creds) and KEY not in str(creds)
    leaked = f"key={KEY} header: Authorization: {basic_auth(USER, KEY)}"
    assert creds.redact(leaked) == "key=*** header: Authorization: Basic ***"

    cfg = tmp_path / "cfg"
    cfg.mkdir()
    path = cfg / "kaggle.json"
    path.write_text(json.dumps({"username": USER, "key": KEY}))
    path.chmod(0o644)
    creds = load_credentials({"KAGGLE_CONFIG_DIR": str(cfg)}, warn=warnings.append)
    assert creds.key == KEY and creds.source == str(path)
    assert len(warnings) == 1 and "chmod 600" in warnings[0] and KEY not in warnings[0]
    path.chmod(0o600)
    load_credentials({"KAGGLE_CONFIG_DIR": str(cfg)}, warn=warnings.append)
    assert len(warnings) == 1

    path.write_text('{"username": "alice", "token": "' + KEY + '"}')
    with pytest.raises(CredentialsError, match="'username' and 'key'") as err:
        load_credentials({"KAGGLE_CONFIG_DIR": str(cfg)})
    assert KEY not in str(err.value)
    with pytest.raises(CredentialsError, match="KAGGLE_USERNAME and KAGGLE_KEY"):
        load_credentials({"HOME": str(tmp_path / "nobody")})
