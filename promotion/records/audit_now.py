"""The audit's look at the world now: does it agree with the last record in git?

Git history can be cut short (a force-push that drops the last record commit leaves a
history that is consistent in itself). Two witnesses outside the repository catch it:

* the **registry**: the alias ``<env>`` must hold what the last record says runs there
  (its version and artifact digest); anything else means the history was truncated or
  the alias moved outside the process;
* the **transparency log**, for keyless records, when the audit runs online: each
  record's log entry must be in the log with the integrated time its bundle claims, and
  the log must hold no record signed by a trusted workflow, for the version the
  environment or the alias names, that is newer than the last one and absent from git.

Offline, the transparency-log comparison is skipped and the report says so; a registry
that cannot be read is reported as not checked. Neither fails the audit by itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os

from promotion.errors import Error

REKOR_PUBLIC = "https://rekor.sigstore.dev"
TIMEOUT_S = 10.0
MAX_ENTRIES = 25  # per searched digest: bounded work whatever the log answers


def check_registry(report, registry, env: str, last, tip_unverified: bool, head_model) -> None:
    """Compare the registry alias ``env`` with the last verified record (see module docstring)."""
    from promotion.records.audit import Violation

    if registry is None:
        report.checks["registry"] = {"status": "skipped", "note": "registry not checked"}
        return
    if tip_unverified:
        report.checks["registry"] = {"status": "skipped", "note": "the last record does not verify"}
        return
    name = last.model if last is not None else (head_model[0] if head_model else None)
    if name is None:
        report.checks["registry"] = {"status": "skipped", "note": "no model to look up"}
        return
    expected = None
    if last is not None and not (last.action in ("rollback", "reject")
                                 and last.predicate.get("replaced_version") == last.version):
        expected = (last.version, last.predicate["model"]["digest"])
    try:
        alias = registry.alias(name, env)
        digest = registry.version(name, alias).digest if alias is not None else None
        if alias is None and expected is not None:
            registry.version(name, expected[0])  # is this the registry of these records at all?
    except Error as exc:
        report.checks["registry"] = {"status": "skipped", "note": f"cannot read the registry: {exc.message}"}
        return
    where = getattr(registry, "uri", "the registry")
    said = f"last record says v{expected[0]}" if expected else (
        "last record says nothing runs" if last is not None else f"no record says anything runs in {env}")
    problem = None
    if alias is None and expected is not None:
        problem = f"alias {env} is not set, {said}"
    elif alias is not None and (expected is None or alias != expected[0]):
        problem = f"alias {env} -> v{alias}, {said}"
    elif alias is not None and digest and digest != expected[1]:
        problem = f"alias {env} -> v{alias} with artifact digest {digest}, but the last record's digest is {expected[1]}"
    if problem:
        report.violations.append(Violation(f"registry: history truncated or alias moved outside promotion: {problem}",
                                           None))
        report.checks["registry"] = {"status": "violation", "note": problem, "registry": where,
                                     "alias": alias, "digest": digest}
        return
    note = f"alias {env} -> v{alias}, as the last record says" if alias is not None else f"alias {env} is not set"
    report.checks["registry"] = {"status": "ok", "note": note, "registry": where, "alias": alias, "digest": digest}


def check_transparency_log(report, git, history, records: list, blobs: dict, rec_path: str, *,
                           online: bool, head_model=None) -> None:
    """Compare keyless records with the transparency log (online) or say it was skipped."""
    keyless = [r for r in records if r.signer_kind == "sigstore"]
    if not keyless:
        report.checks["transparency_log"] = {"status": "none", "note": "no keyless records"}
        return
    if not online:
        report.checks["transparency_log"] = {
            "status": "skipped",
            "note": f"offline: {len(keyless)} keyless record(s) not compared with the transparency log "
                    "(run with --online)"}
        return
    url = rekor_url(history.verifier)
    try:
        problems, compared = _online(git, history, keyless, blobs, rec_path, url, report, head_model)
    except _Unreachable as exc:
        report.checks["transparency_log"] = {"status": "skipped", "note": f"cannot reach {url}: {exc}"}
        return
    from promotion.records.audit import Violation

    for message, commit in problems:
        report.violations.append(Violation(message, commit))
    report.checks["transparency_log"] = {
        "status": "violation" if problems else "ok", "log": url,
        "note": f"{compared} keyless record(s) compared with {url}" + (f"; {len(problems)} problem(s)" if problems else "")}


def rekor_url(trust) -> str:
    """The transparency log to ask: ``$PROMOTION_REKOR_URL``, the trusted root's, or Sigstore's."""
    override = os.environ.get("PROMOTION_REKOR_URL")
    if override:
        return override.rstrip("/")
    if trust.sigstore_trusted_root_json:
        try:
            logs = json.loads(trust.sigstore_trusted_root_json).get("tlogs") or []
            if logs and isinstance(logs[0].get("baseUrl"), str):
                return logs[0]["baseUrl"].rstrip("/")
        except (ValueError, AttributeError):
            pass
    return REKOR_PUBLIC


class _Unreachable(Exception):
    pass


def _online(git, history, keyless, blobs, rec_path, url, report, head_model):
    from promotion.records._json import load_json

    problems = []
    newest = None
    for record in keyless:
        blob = blobs.get(f"{git.head}:{rec_path}{record.name}", b"")
        entry = _bundle_entry(load_json(blob, record.name))
        commit = record.added.sha if record.added else None
        if entry is None:
            problems.append((f"{rec_path[len(git.prefix):]}{record.name}: keyless record without a transparency "
                             "log entry", commit))
            continue
        leaf, integrated = entry
        logged = _get(f"{url}/api/v1/log/entries/{leaf}")
        found = next(iter(logged.values()), None) if isinstance(logged, dict) else None
        if not isinstance(found, dict):
            problems.append((f"{rec_path[len(git.prefix):]}{record.name}: its log entry {leaf[:16]} is not in "
                             f"the transparency log {url}", commit))
            continue
        if int(found.get("integratedTime", -1)) != integrated:
            problems.append((f"{rec_path[len(git.prefix):]}{record.name}: the transparency log integrated it at "
                             f"{found.get('integratedTime')}, its bundle says {integrated}", commit))
        newest = integrated if newest is None else max(newest, integrated)
    # records the log holds and git does not: signed for what runs or is proposed now
    digests = {d for d in (head_model[2] if head_model else None, report.checks.get("registry", {}).get("digest"))
               if isinstance(d, str) and d.startswith("sha256:")}
    known = _payload_hashes(git)
    identities = {i.san for i in history.verifier.identities}
    for digest in sorted(digests):
        uuids = _post(f"{url}/api/v1/index/retrieve", {"hash": digest})
        for uuid in (uuids if isinstance(uuids, list) else [])[:MAX_ENTRIES]:
            logged = _get(f"{url}/api/v1/log/entries/{uuid}")
            for value in (logged.values() if isinstance(logged, dict) else []):
                missing = _missing_record(value, identities, known, newest)
                if missing:
                    problems.append((f"history truncated: the transparency log holds a record for {digest} "
                                     f"{missing}, newer than the last keyless record, and no environment's "
                                     "history in git has it", None))
    return problems, len(keyless)


def _bundle_entry(document) -> tuple[str, int] | None:
    """(leaf hash, integrated time) of a Sigstore bundle's log entry."""
    try:
        entry = document["verificationMaterial"]["tlogEntries"][0]
        body = base64.b64decode(entry["canonicalizedBody"])
        return hashlib.sha256(b"\x00" + body).hexdigest(), int(entry["integratedTime"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None


def _missing_record(value, identities: set[str], known: set[str], newest: int | None) -> str | None:
    from promotion.records.signers.sigstore import certificate_identity

    try:
        body = json.loads(base64.b64decode(value["body"]))
        spec = body["spec"]
        integrated = int(value["integratedTime"])
        payload_hash = spec["payloadHash"]["value"]
        pem = base64.b64decode(spec["signatures"][0]["verifier"])
        from cryptography.x509 import load_pem_x509_certificate

        signer = certificate_identity(load_pem_x509_certificate(pem))
    except Exception:  # an entry of another kind or shape is not one of our records
        return None
    if body.get("kind") != "dsse" or signer not in identities or payload_hash in known:
        return None
    if newest is not None and integrated < newest:
        return None
    return f"signed by {signer} (log index {value.get('logIndex')}, integrated at {integrated})"


def _payload_hashes(git) -> set[str]:
    """sha256 of the signed payload of every keyless record of every environment at HEAD."""
    from promotion.records.chain import RECORDS_DIR

    out = git._run("ls-tree", "-r", "--full-name", "--name-only", "HEAD", RECORDS_DIR + "/")
    paths = [p for p in out.decode("utf-8", "replace").splitlines() if p.endswith(".json")]
    hashes = set()
    for data in git.cat([f"{git.head}:{p}" for p in paths]).values():
        try:
            payload = base64.b64decode(json.loads(data)["dsseEnvelope"]["payload"])
        except Exception:  # local records and unreadable files have no keyless payload
            continue
        hashes.add(hashlib.sha256(payload).hexdigest())
    return hashes


def _get(url: str):
    return _request(url, None)


def _post(url: str, body: dict):
    return _request(url, json.dumps(body).encode())


def _request(url: str, data: bytes | None):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json",
                                                          "Accept": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:  # noqa: S310 - https or a configured log
            return json.loads(resp.read(4 * 1024 * 1024))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise _Unreachable(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _Unreachable(str(getattr(exc, "reason", exc))[:200]) from None
