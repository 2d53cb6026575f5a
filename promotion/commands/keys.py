"""``promotion keys``: create, rotate and list local record-signing keys."""

from __future__ import annotations

from promotion.commands._common import emit_json

HELP = "create or rotate the local ed25519 record-signing key; list trusted keys"
# a signer added by a direct push counts for nothing (promotion.records.validity)
VIA_PULL_REQUEST = ("open a pull request with this change to environments/trust.yaml: records the new key signs "
                    "count only once a merged pull request added it")


def add_arguments(parser) -> None:
    sub = parser.add_subparsers(dest="keys_command", metavar="ACTION", parser_class=type(parser))
    sub.add_parser("create", help="create the signing key (if none) and register its public key in the trust file")
    sub.add_parser("rotate", help="retire the active key(s), destroy the old private key, create a new one; "
                                  "records committed before the retirement stay verifiable")
    p = sub.add_parser("list", help="list the keys and workflow identities in the trust file")
    p.add_argument("--json", action="store_true", help="print as JSON")


def run(args) -> int:
    from promotion.commands._common import project
    from promotion.errors import UsageError
    from promotion.records import keys
    from promotion.records.trust import Trust

    root = project(args).root
    action = getattr(args, "keys_command", None)
    if action == "create":
        signer, source, created = keys.load_signing_key(root, create=True)
        written = keys.register(root, signer)
        keyid = signer.public_key.keyid
        print(f"{'created' if created else 'using'} signing key {keyid[:12]} ({source})")
        if written:
            print("commit: " + " ".join(p.relative_to(root).as_posix() for p in written))
            print(VIA_PULL_REQUEST)
        else:
            print("already listed in environments/trust.yaml")
        return 0
    if action == "rotate":
        retired, signer, written = keys.rotate(root)
        for keyid in retired:
            print(f"retired key {keyid[:12]}: its private key is destroyed; records it signed stay valid if "
                  "they are committed before this change to environments/trust.yaml")
        print(f"new signing key {signer.public_key.keyid[:12]} ({keys.private_key_path(root)})")
        print("commit: " + " ".join(sorted({p.relative_to(root).as_posix() for p in written})))
        print(VIA_PULL_REQUEST)
        return 0
    if action == "list":
        trust = Trust.load(root)
        rows = [{"keyid": k.keyid, "public_key": k.public_key, "valid_from": k.valid_from.isoformat(),
                 "retired_at": k.retired_at.isoformat() if k.retired_at else None} for k in trust.keys.values()]
        idents = [{"repository": i.repository, "workflow": i.workflow, "ref": i.ref, "identity": i.san}
                  for i in trust.identities]
        if getattr(args, "json", False):
            emit_json({"keys": rows, "identities": idents})
            return 0
        for row in rows:
            state = f"retired {row['retired_at']}" if row["retired_at"] else "active"
            print(f"key {row['keyid'][:12]}  valid from {row['valid_from']}  {state}")
        for ident in idents:
            print(f"workflow {ident['identity']}")
        if not rows and not idents:
            print("no trusted signers in environments/trust.yaml")
        return 0
    raise UsageError("promotion keys: choose an action: create, rotate or list")
