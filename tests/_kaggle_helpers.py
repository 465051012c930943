"""A fake Kaggle API on 127.0.0.1 for the kaggle-client tests.

The real `kaggle` client is pointed at it with KAGGLE_API_ENVIRONMENT=LOCALHOST (endpoint
http://localhost/api/v1/...) and HTTP_PROXY=http://127.0.0.1:PORT: every request reaches this
server as a proxy request with the absolute URL. It records each request (path, headers, JSON
body) and answers from per-endpoint scripts of (status, body) responses.
"""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

SUBMISSION_BYTES = b"PK\x05\x06" + b"\0" * 18  # an empty zip archive


class FakeKaggle:
    def __init__(self):
        self.requests: list[dict] = []
        self.scripts: dict[str, deque] = defaultdict(deque)
        self.files = {"/files/submission.zip": SUBMISSION_BYTES}
        self.uploads: dict[str, bytes] = {}  # blob uploads, by the name given in StartBlobUpload
        self.datasets: set[str] = set()  # owner/slug of datasets that exist
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
            return 200, {"ref": f"/code/{body['slug']}", "url": f"https://www.kaggle.com/code/{body['slug']}",
                         "versionNumber": 1 + len(self.calls("SaveKernel")) - 1}
        if endpoint == "GetKernelSessionStatus":
            return 200, {"status": "COMPLETE"}
        if endpoint == "ListKernelSessionOutput":
            return 200, {"files": [{"url": f"http://127.0.0.1:{self.port}/files/submission.zip",
                                    "fileName": "submission.zip"}], "log": "[]"}
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
                if path in fake.files:
                    self._reply(200, fake.files[path], "application/octet-stream")
                else:
                    self._reply(404, b"not found", "text/plain")

            def do_PUT(self):
                path = urlsplit(self.path).path
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                fake.requests.append({"method": "PUT", "path": path, "endpoint": path, "body": None,
                                      "headers": dict(self.headers)})
                fake.uploads[path.rsplit("/", 1)[-1]] = data
                self._reply(200, b"{}", "application/json")

            def do_POST(self):
                path = urlsplit(self.path).path
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw or b"{}")
                endpoint = path.rsplit("/", 1)[-1]
                fake.requests.append({"method": "POST", "path": path, "endpoint": endpoint, "body": body,
                                      "headers": dict(self.headers)})
                queue = fake.scripts[endpoint]
                status, payload = queue.popleft() if queue else fake.default(endpoint, body)
                self._reply(status, json.dumps(payload).encode(), "application/json")

        return Handler


def basic_auth(username: str, key: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()


def client_env(fake: FakeKaggle, home, username: str, key: str) -> dict:
    """Environment variables that point the real client at `fake` with the given credentials."""
    return {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HTTP_PROXY": fake.proxy, "http_proxy": fake.proxy,
            "NO_PROXY": "", "no_proxy": "", "HOME": str(home), "KAGGLE_USERNAME": username, "KAGGLE_KEY": key,
            "KAGGLE_CONFIG_DIR": str(home / ".kaggle")}
