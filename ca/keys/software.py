"""Keys in passphrase-encrypted PKCS#8 PEM files: the no-HSM home, same interface.

One file per key, ``<escaped label>.pem``, mode 0600, in a directory of mode 0700. The label is
percent-escaped (e-mail addresses keep their ``@``) so no label can name a path outside the
directory. A key is never written unencrypted: files are written with ``BestAvailableEncryption``
under the backend's passphrase, atomically (temp file + link, so a crash leaves no half key and
two writers cannot both win). Handles are the same classes as for PKCS#11 and refuse
``private_bytes`` too; decrypted keys are kept in memory only while the backend is open.
"""

from __future__ import annotations

import os
import secrets
import threading
from pathlib import Path
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from ca.keys.base import KeyBackend, KeyType, key_type_of, read_secret, validate_label
from ca.keys.errors import DecryptionFailed, KeyBackendError, KeyExists, KeyNotFound
from ca.keys.handles import EcKeyHandle, PrivateKeyHandle, RsaKeyHandle

SUFFIX = ".pem"
_SAFE = "@+-_"
_SoftKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def label_to_filename(label: str) -> str:
    """``alice@example.org`` -> ``alice@example.org.pem``; ``../x`` -> ``..%2Fx.pem``."""
    name = quote(validate_label(label), safe=_SAFE)
    if name.startswith("."):
        name = "%2E" + name[1:]
    return name + SUFFIX


def filename_to_label(name: str) -> str:
    return unquote(name[: -len(SUFFIX)])


class _SoftwareOps:
    kind = "software"

    def __init__(self, backend: SoftwareBackend) -> None:
        self._backend = backend

    def rsa_sign_pkcs1v15(self, label: str, payload: bytes) -> bytes:
        key = self._backend._rsa(label)
        return key.sign(payload, padding.PKCS1v15(), utils.NoDigestInfo())

    def rsa_sign_pss(
        self,
        label: str,
        digest: bytes,
        algorithm: hashes.HashAlgorithm,
        mgf_hash: hashes.HashAlgorithm,
        salt_length: int,
    ) -> bytes:
        key = self._backend._rsa(label)
        pad = padding.PSS(padding.MGF1(mgf_hash), salt_length)
        return key.sign(digest, pad, utils.Prehashed(algorithm))

    def rsa_decrypt(self, label: str, ciphertext: bytes, pad: AsymmetricPadding) -> bytes:
        key = self._backend._rsa(label)
        try:
            return key.decrypt(ciphertext, pad)
        except ValueError as ex:
            raise DecryptionFailed(
                f"decryption with key {label!r} failed: wrong key or data"
            ) from ex

    def ec_sign_digest(self, label: str, digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
        key = self._backend._key(label)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyBackendError(f"key {label!r} is not an EC key")
        return key.sign(digest, ec.ECDSA(utils.Prehashed(algorithm)))

    def ec_derive(self, label: str, peer_point: bytes) -> bytes:
        key = self._backend._key(label)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise KeyBackendError(f"key {label!r} is not an EC key")
        peer = ec.EllipticCurvePublicKey.from_encoded_point(key.curve, peer_point)
        return key.exchange(ec.ECDH(), peer)


class SoftwareBackend(KeyBackend):
    """Keys in encrypted PEM files under ``directory``.

    The passphrase is given as ``passphrase``, or read from ``passphrase_file`` or the
    environment variable ``passphrase_env`` (exactly one).
    """

    kind = "software"

    def __init__(
        self,
        directory: str | os.PathLike[str],
        passphrase: str | bytes | None = None,
        *,
        passphrase_file: str | os.PathLike[str] | None = None,
        passphrase_env: str | None = None,
    ) -> None:
        given = [x for x in (passphrase, passphrase_file, passphrase_env) if x is not None]
        if len(given) != 1:
            raise KeyBackendError(
                "give the key passphrase as exactly one of passphrase, passphrase_file,"
                " passphrase_env"
            )
        if passphrase is None:
            passphrase = read_secret(file=passphrase_file, env=passphrase_env)
        self._passphrase = passphrase.encode() if isinstance(passphrase, str) else passphrase
        if not self._passphrase:
            raise KeyBackendError("the key passphrase must not be empty")
        self.directory = Path(directory)
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as ex:
            raise KeyBackendError(f"cannot create key directory {self.directory}: {ex}") from ex
        self._keys: dict[str, _SoftKey] = {}
        self._lock = threading.RLock()
        self._ops = _SoftwareOps(self)
        self._closed = False

    def describe(self) -> dict[str, str]:
        return {"kind": self.kind, "directory": str(self.directory)}

    def _path(self, label: str) -> Path:
        return self.directory / label_to_filename(label)

    def _check_open(self) -> None:
        if self._closed:
            raise KeyBackendError(f"the key backend in {self.directory} is closed")

    # -- private key access, for _SoftwareOps only -------------------------------------
    def _key(self, label: str) -> _SoftKey:
        self._check_open()
        with self._lock:
            key = self._keys.get(label)
            if key is None:
                key = self._keys[label] = self._read(label)
            return key

    def _rsa(self, label: str) -> rsa.RSAPrivateKey:
        key = self._key(label)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise KeyBackendError(f"key {label!r} is not an RSA key")
        return key

    def _read(self, label: str) -> _SoftKey:
        path = self._path(label)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise KeyNotFound(f"no key labelled {label!r} in {self.directory}") from None
        except OSError as ex:
            raise KeyBackendError(f"cannot read key file {path}: {ex.strerror}") from ex
        try:
            key = serialization.load_pem_private_key(data, password=self._passphrase)
        except (ValueError, TypeError) as ex:
            raise KeyBackendError(
                f"cannot decrypt key file {path}: wrong passphrase or not an encrypted key"
            ) from ex
        if not isinstance(key, _SoftKey):
            raise KeyBackendError(f"key file {path} holds an unsupported key type")
        return key

    def _handle(self, label: str, key: _SoftKey) -> PrivateKeyHandle:
        if isinstance(key, rsa.RSAPrivateKey):
            kt = KeyType.from_rsa_bits(key.key_size)
            return RsaKeyHandle(label, kt, self._ops, key.public_key())
        kt = KeyType.from_curve_name(key.curve.name)
        return EcKeyHandle(label, kt, self._ops, key.public_key())

    # -- the interface ----------------------------------------------------------------
    def generate(self, label: str, key_type: KeyType) -> PrivateKeyHandle:
        self._check_open()
        self._path(label)  # refuse a bad label before spending time on key generation
        key_type = KeyType.parse(key_type)
        key: _SoftKey
        if key_type.is_rsa:
            key = rsa.generate_private_key(public_exponent=65537, key_size=key_type.rsa_bits)
        else:
            key = ec.generate_private_key(key_type.curve)
        return self.import_key(label, key)

    def import_key(self, label: str, key: _SoftKey) -> PrivateKeyHandle:
        self._check_open()
        path = self._path(label)
        key_type_of(key)  # refuses sizes and curves cmcgate does not use
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(self._passphrase),
        )
        with self._lock:
            self._write_new(path, pem, label)
            self._keys[label] = key
        return self._handle(label, key)

    def _write_new(self, path: Path, data: bytes, label: str) -> None:
        tmp = path.with_name(f".tmp-{secrets.token_hex(8)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(tmp, path)  # fails if the label exists: no overwrite, ever
        except FileExistsError:
            raise KeyExists(f"a key labelled {label!r} exists already in {self.directory}")
        except OSError as ex:
            raise KeyBackendError(f"cannot write key file {path}: {ex.strerror}") from ex
        finally:
            tmp.unlink(missing_ok=True)

    def load(self, label: str) -> PrivateKeyHandle:
        return self._handle(label, self._key(label))

    def exists(self, label: str) -> bool:
        self._check_open()
        return self._path(label).is_file()

    def delete(self, label: str) -> None:
        self._check_open()
        path = self._path(label)
        with self._lock:
            self._keys.pop(label, None)
            try:
                path.unlink()
            except FileNotFoundError:
                raise KeyNotFound(f"no key labelled {label!r} in {self.directory}") from None
            except OSError as ex:
                raise KeyBackendError(f"cannot delete key file {path}: {ex.strerror}") from ex

    def labels(self) -> list[str]:
        self._check_open()
        names = (p.name for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        return sorted(filename_to_label(n) for n in names if not n.startswith(".tmp-"))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._keys.clear()

    def __repr__(self) -> str:
        return f"<SoftwareBackend directory={self.directory}>"
