"""`python -m guie_nb.kaggle {stage,push,status,output,submit}`: the one Kaggle command line.

    stage   stage and validate the helper dataset and the kernels (no network, no credentials)
    push    stage, then push the chain: the helper dataset when it changed, each kernel whose staged
            content or inputs changed since its last pushed version, once the kernels before it
            completed (status tied to the run id). Waits for the chain by default; `--no-wait` does
            one pass and exits, `--resume` only moves a chain already under way (scheduled CI).
            The chain state (versions, run ids) is kept in `--state`.
    status  the kernels' latest sessions
    output  download a kernel's output, every file checked
    submit  submit the submit kernel's version that `push` produced, after checking its output
            against its own report; refuses, naming the reason, otherwise

The scripts in scripts/kaggle_*.py and the make targets call these.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from guie_nb.kaggle import chain
from guie_nb.kaggle import metadata as md
from guie_nb.kaggle.client import AuthError, CredentialsError, KaggleClient, KaggleError, load_credentials, \
    owner_from_environment
from guie_nb.kaggle.layout import HELPERS_SLUG
from guie_nb.kaggle.metadata import MetadataError
from guie_nb.kaggle.stage import build_helper_dataset, chain_metadata, kernel_meta, stage_kernels
from guie_nb.notebook_build import NOTEBOOK_ORDER
from guie_nb.stages import notebook_of

COMMANDS = ("stage", "push", "status", "output", "submit")


def _repo() -> Path:
    return Path(__file__).resolve().parents[3]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--owner", help="Kaggle username owning the kernels (default: KAGGLE_USERNAME or kaggle.json)")
    p.add_argument("--metadata-dir", default=str(_repo() / "kernel-metadata"))


def _staging(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", "--profile", dest="preset", default="demo",
                   help="preset whose parameters are baked into the notebooks")
    p.add_argument("--out", default=str(_repo() / "build" / "kaggle"), help="staging folder")
    p.add_argument("--notebook-dir", default=str(_repo() / "notebooks"))


def _state_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--state", help=f"chain state file (default: <out>/{chain.STATE_FILE})")


def _owner(args) -> str:
    owner = args.owner or owner_from_environment()
    if not owner:
        raise CredentialsError("no Kaggle owner: pass --owner, or set KAGGLE_USERNAME (or kaggle.json)")
    return owner


def _fail(e: Exception) -> int:
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, (MetadataError, CredentialsError, ValueError, FileNotFoundError)) else 1


def _client(owner: str) -> KaggleClient:
    creds = load_credentials()
    if creds.username != owner:
        raise CredentialsError(f"the credentials belong to {creds.username!r}, but the kernels are staged "
                               f"for owner {owner!r}")
    return KaggleClient(creds)


def _stage(args, owner: str):
    out = Path(args.out)
    dataset = build_helper_dataset(out / HELPERS_SLUG, owner)
    kernels = stage_kernels(out, owner, args.preset, args.notebook_dir, args.metadata_dir)
    print(f"staged {dataset}")
    for k in kernels:
        net = "internet on" if md.flag(k.meta, "enable_internet") else "internet off"
        print(f"staged {k.folder} ({k.ref}, {md.accelerator(k.meta)}, {net}, content {k.content_sha256[:12]})")
        for w in k.warnings:
            print(f"warning: {w}", file=sys.stderr)
    return dataset, kernels


def _state_path(args) -> Path:
    return Path(args.state) if args.state else Path(args.out) / chain.STATE_FILE


def stage_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m guie_nb.kaggle stage",
                                description="Stage and validate the helper dataset and the kernels; no network.")
    _common(p)
    _staging(p)
    args = p.parse_args(argv)
    try:
        _stage(args, _owner(args))
        print("dry run: staged and validated, nothing pushed")
        return 0
    except (MetadataError, CredentialsError, ValueError, FileNotFoundError) as e:
        return _fail(e)


def push_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m guie_nb.kaggle push", description=__doc__.split("\n\n")[1])
    _common(p)
    _staging(p)
    _state_arg(p)
    p.add_argument("--no-dataset", action="store_true", help="never push the helper dataset")
    p.add_argument("--no-wait", action="store_true", help="one pass: push what is ready, record the state, exit")
    p.add_argument("--resume", action="store_true",
                   help="only move a chain already under way (scheduled runs); start nothing new")
    p.add_argument("--poll", type=float, default=60.0, help="seconds between status polls")
    p.add_argument("--dry-run", action="store_true", help="stage and validate only; no network, no credentials")
    args = p.parse_args(argv)
    try:
        owner = _owner(args)
        dataset, kernels = _stage(args, owner)
        if args.dry_run:
            print("dry run: staged and validated, nothing pushed")
            return 0
        client = _client(owner)
        state_path = _state_path(args)
        state = chain.load_state(state_path, args.preset, owner)
        helpers = None if args.no_dataset else _helpers_digest(dataset)
        out = chain.run(client, kernels, state, start=not args.resume, wait=not args.no_wait,
                        work_dir=Path(args.out) / "chain", poll_s=args.poll, dataset=dataset,
                        helpers_sha256=helpers, save=lambda s: chain.save_state(s, state_path),
                        dataset_poll_s=min(args.poll, 10.0), log=lambda m: print(m, flush=True))
        chain.save_state(state, state_path)
        if out.done:
            print(f"chain complete: every kernel's pushed run completed (state: {state_path})")
        elif out.idle:
            print("nothing to resume: no chain under way (dispatch a push to start one)")
        else:
            print(f"waiting for {out.waiting_for} (state: {state_path}); run again to go on")
        return 0
    except (KaggleError, MetadataError, CredentialsError, ValueError, FileNotFoundError) as e:
        return _fail(e)


def _helpers_digest(dataset: Path) -> str:
    import json

    return json.loads((dataset / "guie_nb_version.json").read_text())["sha256"]


def _refs(args) -> list[str]:
    metas = chain_metadata(args.metadata_dir, _owner(args))
    names = args.notebooks or list(NOTEBOOK_ORDER)
    return [kernel_meta(metas[notebook_of(n)], n)["id"] for n in names]  # a stage's kernel: 03_finetune:<stage>


def status_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m guie_nb.kaggle status",
                                description="Print the status of the kernels' latest sessions.")
    _common(p)
    p.add_argument("notebooks", nargs="*", metavar="KERNEL",
                   help=f"some of {list(NOTEBOOK_ORDER)}, or a stage's kernel (03_finetune:<stage>) "
                        "(default: the five)")
    p.add_argument("--wait", action="store_true", help="poll until each session ends")
    p.add_argument("--poll", type=float, default=60.0)
    args = p.parse_args(argv)
    unknown = sorted(n for n in args.notebooks if notebook_of(n) not in NOTEBOOK_ORDER or "#" in n)
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
    p = argparse.ArgumentParser(prog="python -m guie_nb.kaggle output",
                                description="Download a kernel's output (default: the submit kernel's "
                                            "submission.zip and its report), every file checked.")
    _common(p)
    p.add_argument("notebook", nargs="?", default=chain.SUBMIT_NOTEBOOK, metavar="KERNEL",
                   help=f"one of {list(NOTEBOOK_ORDER)}, or a stage's kernel (03_finetune:<stage>)")
    p.add_argument("--dest", default=str(_repo() / "build" / "kaggle-output"))
    p.add_argument("--pattern", default=r"^(submission\.zip|submit_report\.json|verification\.json|guie_run\.json)$",
                   help="regex on file names ('.*' for all)")
    args = p.parse_args(argv)
    if notebook_of(args.notebook) not in NOTEBOOK_ORDER:
        p.error(f"unknown kernel {args.notebook!r}; choose from {list(NOTEBOOK_ORDER)} or 03_finetune:<stage>")
    try:
        args.notebooks = [args.notebook]
        ref = _refs(args)[0]
        files = KaggleClient(load_credentials()).output(ref, Path(args.dest) / ref.split("/")[1], args.pattern)
        for f in files:
            print(f)
        if args.notebook in (chain.EXPORT_NOTEBOOK, chain.SUBMIT_NOTEBOOK) and "submission" in args.pattern and \
                not any(f.name == "submission.zip" for f in files):
            raise KaggleError(f"{ref} has no submission.zip in its output (did the session complete?)")
        return 0
    except (KaggleError, MetadataError, CredentialsError, ValueError) as e:
        return _fail(e)


def submit_main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m guie_nb.kaggle submit",
                                description="Submit the submit kernel's version that `push` produced, after "
                                            "checking its output; refuses, naming the reason, otherwise.")
    _common(p)
    _staging(p)
    _state_arg(p)
    p.add_argument("--message", "-m", default=None, help="submission description (default: preset and version)")
    p.add_argument("--competition", default=chain.COMPETITION)
    p.add_argument("--force", action="store_true", help="submit even if this version was submitted before")
    p.add_argument("--if-complete", action="store_true",
                   help="exit 0 without submitting while the chain is not complete (CI)")
    args = p.parse_args(argv)
    try:
        owner = _owner(args)
        state_path = _state_path(args)
        if not state_path.is_file():
            raise chain.SubmitRefused(f"not submitting: no chain state at {state_path}; run `make push` first")
        state = chain.load_state(state_path, args.preset, owner)
        sub = state["kernels"].get(chain.SUBMIT_NOTEBOOK)
        if args.if_complete and (not sub or sub["status"] != "complete" or
                                 (state.get("submission") or {}).get("version") == sub["version"]):
            print("nothing to submit yet: the chain is not complete, or its version was submitted")
            return 0
        message = args.message or f"guie-nb {args.preset}: {sub['ref'] if sub else '?'} v{sub['version'] if sub else '?'}"
        done = chain.submit(_client(owner), state, work_dir=Path(args.out) / "chain", message=message,
                            competition=args.competition, force=args.force,
                            save=lambda s: chain.save_state(s, state_path), log=lambda m: print(m, flush=True))
        print(f"submitted {done['ref']} version {done['version']} (run {done['run_id']}, "
              f"submission.zip sha256 {done['sha256'][:12]}...)")
        return 0
    except AuthError as e:
        return _fail(e)
    except (KaggleError, MetadataError, CredentialsError, ValueError, FileNotFoundError) as e:
        return _fail(e)


MAINS = {"stage": stage_main, "push": push_main, "status": status_main, "output": output_main, "submit": submit_main}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in MAINS:
        print(__doc__, file=sys.stderr)
        return 2
    return MAINS[argv[0]](argv[1:])
