"""CLI verbs of OPC UA certificates: `dcim pki client` and `dcim pki trust`.

`client` makes the collector's application instance certificate and key; `trust` fetches
a server's certificate over a None channel (GetEndpoints), shows what a person must check
(subject, validity, fingerprints, to compare with the server's own display) and copies it
into the trust folder only when confirmed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def _cmd_client(args: argparse.Namespace) -> int:
    from dcim.collectors.opcua_pki import describe, make_client_certificate
    from asyncua.crypto import uacrypto

    folder = Path(args.output)
    try:
        files = make_client_certificate(folder, args.uri, args.dns or None,
                                        days=args.days, overwrite=args.force)
    except FileExistsError as exc:
        print(f"dcim pki client: {exc} (--force replaces it)", file=sys.stderr)
        return 1
    cert = uacrypto.x509_from_der(files.certificate_der.read_bytes())
    print(f"certificate: {files.certificate_der} (DER), {files.certificate_pem} (PEM)")
    print(f"private key: {files.private_key} (PEM, mode 0600)")
    if cert is not None:
        print("\n".join(describe(cert)))
    trust_dir = folder / "trusted"
    print("\nIn the site file, under the OPC UA gateway:\n"
          "    security:\n"
          "      policy: Basic256Sha256\n"
          "      mode: SignAndEncrypt\n"
          f"      certificate: {files.certificate_der}\n"
          f"      private_key: {files.private_key}\n"
          f"      trust_dir: {trust_dir}\n"
          f"Then give {files.certificate_der} to the server's administrator to trust, and run "
          f"`dcim pki trust opc.tcp://SERVER:4840 --trust-dir {trust_dir}`.")
    return 0


def _cmd_trust(args: argparse.Namespace) -> int:
    from dcim.collectors.opcua_pki import describe, server_certificates, trust

    try:
        certs = asyncio.run(server_certificates(args.url, args.timeout))
    except Exception as exc:  # asyncua raises many kinds; the person needs the message
        print(f"cannot read the endpoints of {args.url}: {type(exc).__name__}: {exc}",
              file=sys.stderr)
        return 1
    if not certs:
        print(f"{args.url} sends no certificate with its endpoints (security None only?)",
              file=sys.stderr)
        return 1
    trust_dir = Path(args.trust_dir)
    for cert in certs:
        print(f"server certificate of {args.url}:")
        print("\n".join(f"  {line}" for line in describe(cert)))
        if not args.yes:
            try:
                answer = input(f"Compare the fingerprints with the server's own. Trust it "
                               f"(copy into {trust_dir})? [y/N] ")
            except EOFError:  # no one to ask (stdin closed, a script): the answer is no
                print("\nnot trusted: no answer on stdin (--yes trusts without asking)")
                continue
            if answer.strip().lower() not in ("y", "yes"):
                print("not trusted")
                continue
        print(f"trusted: {trust(cert, trust_dir)}")
    return 0


def add_parsers(sub: Any) -> None:
    """Register `pki client` and `pki trust` on the main parser's subcommands."""
    p = sub.add_parser("pki", help="OPC UA certificates: make the client's, trust a server's",
                       description="Certificates for OPC UA security (Basic256Sha256).")
    psub = p.add_subparsers(dest="pki_command", required=True, metavar="SUBCOMMAND")

    c = psub.add_parser("client", help="make the collector's certificate and key",
                        description="A self-signed application instance certificate (2048-bit "
                                    "RSA, SHA-256, application URI and DNS/IP names in "
                                    "SubjectAltName, clientAuth) in DER and PEM, and its PEM "
                                    "key, files 0600.")
    c.add_argument("--uri", required=True,
                   help="application URI, e.g. urn:dcim:cyberport5:collector")
    c.add_argument("--dns", action="append", default=[], metavar="NAME",
                   help="host name or IP address for SubjectAltName (repeat; default: this host)")
    c.add_argument("--days", type=int, default=3 * 365, help="validity (default 3 years)")
    c.add_argument("-o", "--output", default="pki", help="folder (default ./pki)")
    c.add_argument("--force", action="store_true", help="replace existing files")
    c.set_defaults(func=_cmd_client)

    t = psub.add_parser("trust", help="fetch a server's certificate and trust it on confirmation",
                        description="Read the server's certificate from its endpoints (over "
                                    "a None channel: GetEndpoints), show subject, validity and "
                                    "SHA-256/SHA-1 fingerprints, copy it into the trust folder "
                                    "when confirmed.")
    t.add_argument("url", help="endpoint, e.g. opc.tcp://10.0.0.5:4840")
    t.add_argument("--trust-dir", default="pki/trusted",
                   help="trust folder (default pki/trusted)")
    t.add_argument("--timeout", type=float, default=4.0, help="seconds (default 4)")
    t.add_argument("--yes", action="store_true", help="trust without asking (for scripts)")
    t.set_defaults(func=_cmd_trust)
