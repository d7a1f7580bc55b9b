"""Daraja's SecurityCredential: the initiator's password encrypted with Safaricom's certificate.

RSA with PKCS#1 v1.5 padding (not OAEP), then base64, as Daraja decrypts it. The
sandbox and production each have their own certificate (from the Daraja portal);
the simulator has its own, so a credential built with the wrong one fails the way
Daraja fails (result 2001, "The initiator information is invalid").
"""
from __future__ import annotations

import base64
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import padding, rsa


class CredentialError(ValueError):
    """The certificate cannot be read or holds no RSA key."""


def load_public_key(path: str) -> rsa.RSAPublicKey:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CredentialError(f"cannot read the certificate file ({exc.strerror})") from None
    try:
        cert = x509.load_pem_x509_certificate(data) if b"-----BEGIN" in data else x509.load_der_x509_certificate(data)
    except ValueError:
        raise CredentialError("the certificate file is not a PEM or DER X.509 certificate") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise CredentialError("the certificate does not hold an RSA key")
    return key


def security_credential(password: str, certificate_path: str) -> str:
    """base64(RSA-PKCS1v15(password)) with the certificate's key; a new value each call (random padding)."""
    if not password:
        raise CredentialError("the initiator password is empty")
    return base64.b64encode(load_public_key(certificate_path).encrypt(password.encode(), padding.PKCS1v15())).decode()
