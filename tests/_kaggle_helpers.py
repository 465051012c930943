"""A fake Kaggle API on 127.0.0.1 for the kaggle-client tests.

The real `kaggle` client is pointed at it with KAGGLE_API_ENVIRONMENT=LOCALHOST (endpoint
http://localhost/api/v1/...) and HTTP_PROXY=http://127.0.0.1:PORT: every request reaches this
server as a proxy request with the absolute URL. It records each request (path, headers, JSON
body) and answers from per-endpoint scripts of (status, body) responses.

Kernels "run": a pushed kernel's session ends at its next status poll (COMPLETE by default),
and then its output is what `runner(slug, staged, fake)` returns (`staged`: the STAGED dict baked
into the pushed notebook). Until then the output is the previous run's. Faults to inject:
`stale_polls[slug] = n` (the next n polls after a push report COMPLETE while the run has not
finished: the previous run's status), `broken[(slug, name)] = status | bytes` (an HTTP error or
other bytes for that output file), `upload_status[name] = status` (a failed blob upload).
"""

from __future__ import annotations

import ast
import base64
import json
import re
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

SUBMISSION_BYTES = b"PK\x05\x06" + b"\0" * 18  # an empty zip archive


class FakeKaggle:
    def __init__(self):
        self.requests: list[dict] = []
        self.scripts: dict[str, deque] = defaultdict(deque)
        self.files = {"/files/submission.zip": SUBMISSION_BYTES}
        self.uploads: dict[str, bytes] = {}  # blob uploads, by the name given in StartBlobUpload
        self.datasets: set[str] = set()  # owner/slug of datasets that exist
        self.outputs: dict[str, dict[str, bytes]] = {}  # kernel slug -> output files of its last finished run
        self.versions: dict[str, int] = defaultdict(int)  # kernel slug -> pushed versions
        self.pending: dict[str, dict] = {}  # kernel slug -> STAGED of the pushed, unfinished run
        self.pushed: dict[str, dict] = {}  # kernel slug -> the last SaveKernel body
        self.runner = None  # (slug, staged, fake) -> {name: bytes}; default: just guie_run.json
        self.stale_polls: dict[str, int] = defaultdict(int)
        self.broken: dict[tuple[str, str], object] = {}
        self.upload_status: dict[str, int] = {}
        handler = self._handler()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def script(self, endpoint: str, *responses: tuple[int, dict]) -> None:
        """Queue responses for an endpoint (e.g. 'SaveKernel'); afterwards the default answers."""
        self.scripts[endpoint].extend(responses)

    def calls(self, endpoint: str) -> list[dict]:
        return [r for r in self.requests if r["endpoint"] == endpoint]

    def default(self, endpoint: str, body: dict) -> tuple[int, dict]:
        if endpoint == "SaveKernel":
            slug = body["slug"].split("/")[-1]
            self.versions[slug] += 1
            self.pending[slug] = staged_of(body)
            self.pushed[slug] = body
            return 200, {"ref": f"/code/{body['slug']}", "url": f"https://www.kaggle.com/code/{body['slug']}",
                         "versionNumber": self.versions[slug]}
        if endpoint == "GetKernelSessionStatus":
            return 200, {"status": "COMPLETE"}
        if endpoint == "ListKernelSessionOutput":
            slug = body["kernelSlug"]
            if slug in self.outputs:
                return 200, {"files": [{"url": f"{self.proxy}/out/{slug}/{name}", "fileName": name}
                                       for name in self.outputs[slug]], "log": "[]"}
            return 200, {"files": [{"url": f"http://127.0.0.1:{self.port}/files/submission.zip",
                                    "fileName": "submission.zip"}], "log": "[]"}
        if endpoint == "CreateCodeSubmission":
            return 200, {"message": "Your submission was successfully saved", "ref": 4242}
        if endpoint == "StartBlobUpload":
            return 200, {"token": f"token-{body['name']}", "createUrl": f"{self.proxy}/upload/{body['name']}"}
        if endpoint == "GetDatasetStatus":
            ref = f"{body['ownerSlug']}/{body['datasetSlug']}"
            return (200, {"status": "READY"}) if ref in self.datasets else (404, {"code": 404, "message": "no such dataset"})
        if endpoint in ("CreateDataset", "CreateDatasetVersion"):
            ref = f"{body['ownerSlug']}/{body.get('slug') or body.get('datasetSlug')}"
            self.datasets.add(ref)
            return 200, {"ref": ref, "url": f"https://www.kaggle.com/datasets/{ref}", "status": "ok"}
        return 404, {"code": 404, "message": f"fake Kaggle has no {endpoint}"}

    def status_reply(self, body: dict, scripted: tuple[int, dict] | None) -> tuple[int, dict]:
        """A status poll: the scripted or default answer; a COMPLETE or ERROR ends the pending run
        (its output appears), unless a stale poll is injected for the kernel."""
        status, payload = scripted or self.default("GetKernelSessionStatus", body)
        slug = body.get("kernelSlug")
        if status == 200 and slug in self.pending:
            if self.stale_polls[slug] > 0:
                self.stale_polls[slug] -= 1
                return 200, {"status": "COMPLETE"}  # the previous run's status
            if payload.get("status") in ("COMPLETE", "ERROR"):
                staged = self.pending.pop(slug)
                runner = self.runner or (lambda slug, staged, fake: {"guie_run.json": run_marker(staged)})
                self.outputs[slug] = runner(slug, staged, self)
        return status, payload

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _reply(self, status: int, payload: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def do_GET(self):
                path = urlsplit(self.path).path
                fake.requests.append({"method": "GET", "path": path, "endpoint": path, "body": None,
                                      "headers": dict(self.headers)})
                parts = path.split("/")
                if len(parts) == 4 and parts[1] == "out" and parts[2] in fake.outputs:
                    slug, name = parts[2], parts[3]
                    fault = fake.broken.get((slug, name))
                    if isinstance(fault, int):
                        self._reply(fault, b"<html>error</html>", "text/html")
                    elif fault is not None:
                        self._reply(200, fault, "application/octet-stream")
                    elif name in fake.outputs[slug]:
                        self._reply(200, fake.outputs[slug][name], "application/octet-stream")
                    else:
                        self._reply(404, b"not found", "text/plain")
                elif path in fake.files:
                    self._reply(200, fake.files[path], "application/octet-stream")
                else:
                    self._reply(404, b"not found", "text/plain")

            def do_PUT(self):
                path = urlsplit(self.path).path
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"method": "PUT", "path": path, "endpoint": path, "body": None,
                                      "headers": dict(self.headers)})
                name = path.rsplit("/", 1)[-1]
                if name in fake.upload_status:
                    self._reply(fake.upload_status[name], b'{"error": "upload failed"}', "application/json")
                    return
                fake.uploads[name] = data
                self._reply(200, b"{}", "application/json")

            def do_POST(self):
                path = urlsplit(self.path).path
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw or b"{}")
                endpoint = path.rsplit("/", 1)[-1]
                fake.requests.append({"method": "POST", "path": path, "endpoint": endpoint, "body": body,
                                      "headers": dict(self.headers)})
                queue = fake.scripts[endpoint]
                scripted = queue.popleft() if queue else None
                if endpoint == "GetKernelSessionStatus":
                    status, payload = fake.status_reply(body, scripted)
                else:
                    status, payload = scripted or fake.default(endpoint, body)
                self._reply(status, json.dumps(payload).encode(), "application/json")

        return Handler


def basic_auth(username: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()


def assert_no_key(username: str, key: str, *texts: str, folders=()) -> None:
    """Neither the key nor its Basic-auth form appears in `texts` or any file under `folders`."""
    secrets = [key, basic_auth(username, key).split()[1]]
    for text in texts:
        assert not any(s in text for s in secrets)
    for folder in folders:
        for f in Path(folder).rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                assert not any(s.encode() in data for s in secrets), f"credential written to {f}"


def client_env(fake: FakeKaggle, home, username: str, key: str) -> dict:
    """Environment variables that point the real client at `fake` with the given credentials."""
    return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": fake.proxy, "http_proxy": fake.proxy,
            "NO_PROXY": "", "no_proxy": "", "HOME": str(home), "KAGGLE_USERNAME": username, "KAGGLE_KEY": key,
            "KAGGLE_CONFIG_DIR": str(home / ".kaggle")}


_STAGED = re.compile(r"^STAGED = (\{.*\})", re.M)


def staged_of(body: dict) -> dict:
    """The STAGED dict baked into a pushed notebook ({} when there is none)."""
    try:
        text = "\n".join(c["source"] if isinstance(c["source"], str) else "".join(c["source"])
                         for c in json.loads(body.get("text") or "{}").get("cells", []))
    except json.JSONDecodeError:
        return {}
    m = _STAGED.search(text)
    return ast.literal_eval(m.group(1)) if m else {}


def run_marker(staged: dict) -> bytes:
    return json.dumps({"run_id": staged.get("run_id"), "notebook": staged.get("notebook")}).encode()
