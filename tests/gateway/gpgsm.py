"""gpgsm (GnuPG's S/MIME tool, behind Kleopatra and KMail) in a throwaway GNUPGHOME.

Non-interactive set-up that works with gpgsm 2.2 (Debian 12) and later:

* the test CA goes into ``trustlist.txt`` (its SHA-1 fingerprint, ``S relax``), so gpgsm
  accepts recipients and signers without asking; CRL and policy checks are switched off
  per call (``--disable-crl-checks --disable-policy-checks``): there is no CRL to fetch;
* private keys are written straight into gpg-agent's ``private-keys-v1.d/<keygrip>.key`` as
  unprotected S-expressions (gpgsm 2.2 crashes importing an EC PKCS#12 and would need a
  passphrase for every RSA one), the keygrip read from ``gpgsm --with-keygrip``;
* every call runs with ``--batch --pinentry-mode loopback``; :meth:`Gpgsm.close` stops the
  gpg-agent the calls started.

gpgsm 2.2 cannot encrypt to or decrypt for EC keys (it fails with "Invalid S-expression" and
"Invalid session key"; ECDH in CMS came with GnuPG 2.3), nor read RSAES-OAEP or
AuthEnvelopedData: :meth:`Gpgsm.supports_ecdh` lets tests skip with that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.gateway.certs import Identity

_CALL = ("--batch", "--pinentry-mode", "loopback")
_NO_CHECKS = ("--disable-crl-checks", "--disable-policy-checks")
_CURVES = {"secp256r1": "NIST P-256", "secp384r1": "NIST P-384", "secp521r1": "NIST P-521"}


def gpgsm_missing_reason() -> str | None:
    if shutil.which("gpgsm") is None or shutil.which("gpgconf") is None:
        return "gpgsm not installed (`make deps` installs it)"
    return None


class GpgsmError(AssertionError):
    """A gpgsm call failed; the message holds its stderr."""


class Gpgsm:
    def __init__(self, home: Path, anchors: list[x509.Certificate]) -> None:
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        (home / "gpg-agent.conf").write_text("allow-loopback-pinentry\n")
        trusted = [c.fingerprint(hashes.SHA1()).hex(":").upper() + " S relax" for c in anchors]
        (home / "trustlist.txt").write_text("\n".join(trusted) + "\n")
        keys = home / "private-keys-v1.d"
        keys.mkdir(mode=0o700, exist_ok=True)
        self.env = {**os.environ, "GNUPGHOME": str(home)}
        for cert in anchors:
            self.import_certificate(cert)

    @property
    def version(self) -> tuple[int, ...]:
        out = self._run("--version").decode()
        found = re.search(r"gpgsm \(GnuPG\) (\d+)\.(\d+)\.(\d+)", out)
        return tuple(int(part) for part in found.groups()) if found else (0,)

    def supports_ecdh(self) -> bool:
        """ECDH in CMS (RFC 5753) arrived in GnuPG 2.3."""
        return self.version >= (2, 3)

    def _run(self, *args: str, data: bytes | None = None) -> bytes:
        proc = subprocess.run(
            ["gpgsm", *args], input=data, env=self.env, capture_output=True, timeout=60
        )
        if proc.returncode != 0:
            raise GpgsmError(f"gpgsm {' '.join(args)}: {proc.stderr.decode(errors='replace')}")
        return proc.stdout

    def import_certificate(self, cert: x509.Certificate) -> None:
        self._run(*_CALL, "--import", data=cert.public_bytes(serialization.Encoding.PEM))

    def import_identity(self, identity: Identity) -> None:
        """The certificate, its chain and the private key (as gpg-agent stores keys)."""
        for cert in (*identity.chain, identity.cert):
            self.import_certificate(cert)
        fingerprint = identity.cert.fingerprint(hashes.SHA1()).hex().upper()
        listing = self._run("--with-keygrip", "--list-keys", f"0x{fingerprint}").decode()
        keygrip = re.search(r"keygrip: ([0-9A-F]{40})", listing)
        assert keygrip, listing
        path = self.home / "private-keys-v1.d" / f"{keygrip.group(1)}.key"
        path.write_text(f"Key: {_sexp(identity.key)}\n")
        path.chmod(0o600)

    def encrypt(self, data: bytes, *recipients: x509.Certificate) -> bytes:
        """Raw CMS EnvelopedData (BER, as gpgsm writes it) for the certificates given."""
        args = [arg for c in recipients for arg in ("-r", "0x" + _fingerprint(c))]
        return self._run(*_CALL, *_NO_CHECKS, *args, "--encrypt", data=data)

    def sign_detached(self, data: bytes, signer: x509.Certificate) -> bytes:
        """Raw CMS SignedData without content, certificates included."""
        return self._run(
            *_CALL, *_NO_CHECKS, "-u", "0x" + _fingerprint(signer),
            "--include-certs", "-1", "--detach-sign", data=data,
        )  # fmt: skip

    def decrypt(self, der: bytes) -> bytes:
        return self._run(*_CALL, *_NO_CHECKS, "--decrypt", data=der)

    def close(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], env=self.env, capture_output=True, timeout=30
        )


def _fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA1()).hex().upper()


def _hex(value: int, size: int | None = None) -> str:
    raw = value.to_bytes(size or (value.bit_length() + 8) // 8, "big")
    return f"#{raw.hex().upper()}#"


def _sexp(key: object) -> str:
    """gpg-agent's S-expression of an unprotected RSA or EC private key."""
    if isinstance(key, rsa.RSAPrivateKey):
        numbers = key.private_numbers()
        p, q = sorted((numbers.p, numbers.q))  # libgcrypt wants p < q, u = p^-1 mod q
        n, e = numbers.public_numbers.n, numbers.public_numbers.e
        return (
            f"(private-key (rsa (n {_hex(n)}) (e {_hex(e)}) (d {_hex(numbers.d)})"
            f" (p {_hex(p)}) (q {_hex(q)}) (u {_hex(pow(p, -1, q))})))"
        )
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    size = (key.curve.key_size + 7) // 8
    point = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    d = key.private_numbers().private_value
    return (
        f'(private-key (ecc (curve "{_CURVES[key.curve.name]}")'
        f" (q #{point.hex().upper()}#) (d {_hex(d, size)})))"
    )
