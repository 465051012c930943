"""The command lines behind scripts/kaggle_*.py: stage, push, status, output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guie_nb.kaggle.client import KaggleClient, KaggleError
from guie_nb.kaggle.credentials import CredentialsError, load_credentials, owner_from_environment
from guie_nb.kaggle.layout import HELPERS_SLUG
from guie_nb.kaggle import metadata as md
from guie_nb.kaggle.metadata import MetadataError
from guie_nb.kaggle.stage import build_helper_dataset, chain_metadata, stage_kernels
from guie_nb.notebook_build import NOTEBOOK_ORDER


def _repo() -> Path:
    return Path(__file__).resolve().parents[3]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--owner", help="Kaggle username owning the kernels (default: KAGGLE_USERNAME or kaggle.json)")
    p.add_argument("--metadata-dir", default=str(_repo() / "kernel-metadata"))


def _owner(args) -> str:
    owner = args.owner or owner_from_environment()
    if not owner:
        raise CredentialsError("no Kaggle owner: pass --owner, or set KAGGLE_USERNAME (or kaggle.json)")
    return owner


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, (MetadataError, CredentialsError, ValueError, FileNotFoundError)) else 1


def _stage(args, owner: str):
    out = Path(args.out)
    dataset = build_helper_dataset(out / HELPERS_SLUG, owner)
    kernels = stage_kernels(out, owner, args.preset, args.notebook_dir, args.metadata_dir)
    return dataset, kernels


def push_main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Stage, validate and push the helper dataset and the kernels.")
    _common(p)
    p.add_argument("--preset", default="demo", help="preset whose parameters are baked into the notebooks")
    p.add_argument("--out", default=str(_repo() / "build" / "kaggle"), help="staging folder")
    p.add_argument("--notebook-dir", default=str(_repo() / "notebooks"))
    p.add_argument("--only", nargs="+", choices=NOTEBOOK_ORDER, help="push only these kernels")
    p.add_argument("--no-dataset", action="store_true", help="do not push the helper dataset")
    p.add_argument("--no-wait", action="store_true",
                   help="do not wait for each kernel to finish before pushing the next one")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between status polls")
    p.add_argument("--dry-run", action="store_true", help="stage and validate only; no network, no credentials")
    args = p.parse_args(argv)
    try:
        owner = _owner(args)
        dataset, kernels = _stage(args, owner)
        print(f"staged {dataset}")
        for k in kernels:
            print(f"staged {k.folder} ({k.ref}, {md.accelerator(k.meta)})")
            for w in k.warnings:
                print(f"warning: {w}", file=sys.stderr)
        if args.dry_run:
            print("dry run: staged and validated, nothing pushed")
            return 0
        creds = load_credentials()
        if creds.username != owner:
            raise CredentialsError(f"the credentials belong to {creds.username!r}, but the kernels are staged "
                                   f"for owner {owner!r}")
        client = KaggleClient(creds)
        if not args.no_dataset:
            r = client.push_dataset(dataset, notes="guie_nb helper package")
            ref = f"{owner}/{HELPERS_SLUG}"
            print(f"pushed dataset {ref} {r.get('url') or ''}".rstrip(), flush=True)
            print(f"dataset {ref}: {client.wait_dataset(ref, poll_s=min(args.poll, 10.0))}", flush=True)
        todo = [k for k in kernels if not args.only or k.notebook in args.only]
        for i, k in enumerate(todo):
            r = client.push_kernel(k.folder)
            print(f"pushed {k.ref} version {r.get('version')} {r.get('url')}", flush=True)
            if not args.no_wait and i + 1 < len(todo):  # the next kernel mounts this one's output
                st = client.wait(k.ref, poll_s=args.poll)
                print(f"{k.ref}: {st['status']}", flush=True)
                if st["status"] != "COMPLETE":
                    raise KaggleError(f"{k.ref} ended {st['status']}: {st.get('failure_message') or ''}; "
                                      "not pushing the kernels that read its output")
        return 0
    except (KaggleError, MetadataError, CredentialsError, ValueError, FileNotFoundError) as e:
        return _fail(e)


def _refs(args) -> list[str]:
    metas = chain_metadata(args.metadata_dir, _owner(args))
    names = args.notebooks or list(NOTEBOOK_ORDER)
    return [metas[n]["id"] for n in names]


def status_main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Print the status of the kernels' latest sessions.")
    _common(p)
    p.add_argument("notebooks", nargs="*", metavar="NOTEBOOK", help=f"some of {list(NOTEBOOK_ORDER)} (default: all)")
    p.add_argument("--wait", action="store_true", help="poll until each session ends")
    p.add_argument("--poll", type=float, default=60.0)
    args = p.parse_args(argv)
    unknown = sorted(set(args.notebooks) - set(NOTEBOOK_ORDER))
    if unknown:
        p.error(f"unknown notebook(s) {unknown}; choose from {list(NOTEBOOK_ORDER)}")
    try:
        client = KaggleClient(load_credentials())
        worst = 0
        for ref in _refs(args):
            st = client.wait(ref, poll_s=args.poll) if args.wait else client.status(ref)
            msg = f": {st['failure_message']}" if st.get("failure_message") else ""
            print(f"{ref}: {st['status']}{msg}")
            worst = max(worst, int(st["status"] == "ERROR"))
        return worst
    except (KaggleError, MetadataError, CredentialsError, ValueError) as e:
        return _fail(e)


def output_main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Download a kernel's output (default: the export's submission.zip).")
    _common(p)
    p.add_argument("notebook", nargs="?", default="04_export", choices=NOTEBOOK_ORDER)
    p.add_argument("--dest", default=str(_repo() / "build" / "kaggle-output"))
    p.add_argument("--pattern", default=r"^submission\.zip$", help="regex on file names ('.*' for all)")
    args = p.parse_args(argv)
    try:
        args.notebooks = [args.notebook]
        ref = _refs(args)[0]
        files = KaggleClient(load_credentials()).output(ref, Path(args.dest) / ref.split("/")[1], args.pattern)
        for f in files:
            print(f)
        if args.notebook == "04_export" and args.pattern == r"^submission\.zip$" and \
                not any(f.name == "submission.zip" for f in files):
            raise KaggleError(f"{ref} has no submission.zip in its output (did the session complete?)")
        return 0
    except (KaggleError, MetadataError, CredentialsError, ValueError) as e:
        return _fail(e)
