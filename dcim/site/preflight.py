"""What a start needs beyond the file itself: secrets in the environment, readable key files.

`dcim validate` and `dcim run` both call `startup_issues`, so a file that validates starts:
every `*_env` field names a variable that is set, and every certificate or private key is a
readable file in a format the part that loads it reads (the OPC UA library picks PEM or DER
from the file name: PEM only for `.pem`; the dashboard's TLS and the journal key take PEM).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel

from dcim.config.site import OpcuaSecurity
from dcim.site.errors import ConfigIssue, Loc
from dcim.site.model import Site

CERTIFICATE_FIELDS = ("certificate", "tls_certificate")
KEY_FIELDS = ("private_key", "tls_private_key")
FOLDER_FIELDS = ("trust_dir",)
FILE_FIELDS = ("journal_key_file",)


def _fields(model: BaseModel, loc: Loc = ()) -> Iterator[tuple[BaseModel, str, object, Loc]]:
    """Every (owner model, field name, value, path) of a config, depth first."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        yield model, name, value, loc + (name,)
        if isinstance(value, BaseModel):
            yield from _fields(value, loc + (name,))
        elif isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _fields(item, loc + (name, i))
        elif isinstance(value, dict):
            for key, item in value.items():
                if isinstance(item, BaseModel):
                    yield from _fields(item, loc + (name, str(key)))


def _is_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def _load(data: bytes, pem: bool, kind: str) -> None:
    """Parse a certificate or a private key as PEM or DER; ValueError says why not."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    if kind == "certificate":
        (x509.load_pem_x509_certificate if pem else x509.load_der_x509_certificate)(data)
    else:
        loader = serialization.load_pem_private_key if pem else serialization.load_der_private_key
        try:
            loader(data, password=None)
        except TypeError:  # encrypted: nothing gives dcim the pass phrase
            raise ValueError("the key is encrypted; dcim needs it without a pass phrase") from None


def _check_crypto_file(path: str, kind: str, opcua: bool) -> str | None:
    """Why a certificate or key file would fail where it is loaded, or None."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror}"
    pem = _is_pem(data)
    if not opcua and not pem:
        return f"{path} is not PEM (-----BEGIN ...); the dashboard's TLS reads PEM only"
    if opcua and pem != (Path(path).suffix.lower() == ".pem"):
        found, read_as = ("PEM", "DER") if pem else ("DER", "PEM")
        return (f"{path} holds a {found} {kind} but the OPC UA library reads a file named "
                f"*{Path(path).suffix or ' (no suffix)'} as {read_as}: "
                + ("name it *.pem" if pem else "convert it to PEM or name it *.der"))
    try:
        _load(data, pem, kind)
    except ValueError as exc:
        return f"{path} is not a readable {'PEM' if pem else 'DER'} {kind}: {exc}"
    return None


def startup_issues(site: Site, environ: Mapping[str, str] | None = None) -> list[ConfigIssue]:
    """Secrets and files the start would miss, each at its field's file and line."""
    environ = os.environ if environ is None else environ
    file = str(site.source) if site.source is not None else "<site>"

    def issue(loc: Loc, message: str) -> ConfigIssue:
        if site.lines is not None:
            return site.lines.issue(loc, message)
        return ConfigIssue(file, None, loc, message)

    issues: list[ConfigIssue] = []
    for owner, name, value, loc in _fields(site.config):
        if not isinstance(value, str) or not value:
            continue
        if name.endswith("_env"):
            if not environ.get(value):
                issues.append(issue(loc, f"environment variable {value} is not set (or empty)"))
        elif name in CERTIFICATE_FIELDS + KEY_FIELDS:
            kind = "certificate" if name in CERTIFICATE_FIELDS else "private key"
            problem = _check_crypto_file(value, kind, isinstance(owner, OpcuaSecurity))
            if problem is not None:
                issues.append(issue(loc, problem))
        elif name in FOLDER_FIELDS and not Path(value).is_dir():
            issues.append(issue(loc, f"{value} is not a folder"))
        elif name in FILE_FIELDS and not os.access(value, os.R_OK):
            issues.append(issue(loc, f"cannot read {value}"))
    return issues
