"""One `kaggle` client call in a fresh process; prints one JSON result line.

Run by guie_nb.kaggle.client as a script (not as part of the package, so it imports only the
client). A fresh process per call because `import kaggle` authenticates at import time and reads
its environment (endpoint, credentials) once. HTTP errors come back with their status code.
"""

import contextlib
import io
import json
import sys

MARKER = "@@guie-kaggle-result@@"


def _push(api, folder, timeout=None):
    r = api.kernels_push(folder, timeout)
    return {"ref": r.ref, "url": r.url, "version": r.version_number, "error": r.error,
            "invalid_sources": {"dataset": list(r.invalid_dataset_sources or []),
                                "competition": list(r.invalid_competition_sources or []),
                                "kernel": list(r.invalid_kernel_sources or []),
                                "model": list(r.invalid_model_sources or [])}}


def _status(api, kernel):
    r = api.kernels_status(kernel)
    return {"status": r.status.name, "failure_message": r.failure_message}


class DownloadError(RuntimeError):
    """A kernel output file came back with an HTTP error or cut short."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


def _output(api, kernel, path, file_pattern=None):
    """kaggle 2.2.1's `kernels_output` saves whatever body a file URL returns (an HTTP error page
    becomes `submission.zip`): its `requests.get` is wrapped here to refuse any non-200 answer and
    to record each file's HTTP status, Content-Length and bytes received."""
    from kaggle.api import kaggle_api_extended as ext

    real_get, seen = ext.requests.get, []

    def checked_get(url, *args, **kwargs):
        r = real_get(url, *args, **kwargs)
        name = url.split("?", 1)[0].rsplit("/", 1)[-1]
        if r.status_code != 200:
            raise DownloadError(f"download of output file {name!r}: HTTP {r.status_code}", r.status_code)
        body = r.content
        length = r.headers.get("Content-Length")
        seen.append({"url_name": name, "status": r.status_code, "bytes": len(body),
                     "content_length": int(length) if length and length.isdigit() else None})
        return r

    ext.requests.get = checked_get
    try:
        files, _ = api.kernels_output(kernel, path, file_pattern=file_pattern, force=True, quiet=True)
    finally:
        ext.requests.get = real_get
    return {"files": files, "downloads": seen}


def _submit(api, competition, kernel, version, file_name, message):
    r = api.competition_submit_code(file_name, message, competition, kernel, int(version), quiet=True)
    return {"ref": r.ref, "message": r.message}


class UploadFailed(RuntimeError):
    pass


def _refuse_partial_uploads(api):
    """kaggle 2.2.1 skips a file whose upload failed and creates the dataset version anyway
    (`_upload_file` returns None): make a failed upload stop the call before any version exists."""
    real = api._upload_file

    def upload_file(file_name, full_path, *args, **kwargs):
        result = real(file_name, full_path, *args, **kwargs)
        if result is None:
            raise UploadFailed(f"the upload of {file_name!r} failed; no dataset version was created")
        return result

    api._upload_file = upload_file


def _dataset_exists(api, ref):
    from requests.exceptions import HTTPError

    try:
        api.dataset_status(ref)
        return True
    except HTTPError as e:
        if e.response is not None and e.response.status_code == 404:
            return False
        raise


def _dataset(api, folder, notes, public=False):
    _refuse_partial_uploads(api)
    ref = json.load(open(f"{folder}/dataset-metadata.json"))["id"]
    if _dataset_exists(api, ref):
        r = api.dataset_create_version(folder, notes, quiet=True, dir_mode="zip")
    else:
        r = api.dataset_create_new(folder, public=public, quiet=True, dir_mode="zip")
    return {"ref": r.ref, "url": r.url, "status": str(r.status), "error": r.error}


def _dataset_status(api, ref):
    return {"status": api.dataset_status(ref)}


OPS = {"push": _push, "status": _status, "output": _output, "dataset": _dataset,
       "dataset_status": _dataset_status, "submit": _submit}


def main() -> int:
    op, kwargs = sys.argv[1], json.loads(sys.argv[2])
    chatter = io.StringIO()
    out = {"ok": False, "status": None}
    try:
        with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
            import kaggle  # authenticates; exits when it finds no credentials

            out = {"ok": True, "result": OPS[op](kaggle.api, **kwargs)}
    except SystemExit:
        out = {"ok": False, "status": 401, "message": "the kaggle client found no credentials"}
    except Exception as e:  # noqa: BLE001 - everything is reported to the parent
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        message = f"{type(e).__name__}: {e}"
        if status is None and "Cannot access kernel" in str(e):
            status = 403  # kernels_status/output turn 401/403 into this ValueError
        if isinstance(e, DownloadError) and e.status is not None and (e.status == 429 or e.status >= 500):
            status = e.status  # retried by the parent; other download errors (a signed URL's 403) are not
        out = {"ok": False, "status": status, "message": message}
    out["chatter"] = chatter.getvalue()[-4000:]
    sys.__stdout__.write(MARKER + json.dumps(out) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
