"""Pure helpers shared by the key handles: digests, PKCS#1 DigestInfo, PSS salt lengths.

Signing inside a backend always works on a digest computed here, in Python: SoftHSM and many
HSMs lack combined mechanisms such as CKM_ECDSA_SHA256, and hashing locally means a large CMS
or CRL never has to cross the PKCS#11 boundary.
"""

from __future__ import annotations

import hmac

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, utils

from ca.keys.errors import UnsupportedKeyOperation

# RFC 8017 §9.2 note 1: DER of DigestInfo ::= SEQUENCE { AlgorithmIdentifier, OCTET STRING }
# up to the digest itself, for the SHA-2 family (parameters NULL).
_DIGEST_INFO_PREFIX: dict[str, bytes] = {
    "sha224": bytes.fromhex("302d300d06096086480165030402040500041c"),
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

SUPPORTED_HASHES = tuple(_DIGEST_INFO_PREFIX)


def check_hash(algorithm: hashes.HashAlgorithm) -> hashes.HashAlgorithm:
    """Only SHA-224/256/384/512 are signed with: SHA-1 and MD5 are refused."""
    if algorithm.name not in _DIGEST_INFO_PREFIX:
        raise UnsupportedKeyOperation(
            f"hash {algorithm.name} is not supported for signing; use one of "
            + ", ".join(SUPPORTED_HASHES)
        )
    return algorithm


def digest_of(
    data: bytes, algorithm: hashes.HashAlgorithm | utils.Prehashed
) -> tuple[bytes, hashes.HashAlgorithm]:
    """(digest, hash algorithm) of ``data``; with ``Prehashed`` the data is the digest."""
    if isinstance(algorithm, utils.Prehashed):
        inner = check_hash(algorithm._algorithm)
        if len(data) != inner.digest_size:
            raise UnsupportedKeyOperation(
                f"prehashed {inner.name} digest must be {inner.digest_size} bytes, got {len(data)}"
            )
        return bytes(data), inner
    check_hash(algorithm)
    h = hashes.Hash(algorithm)
    h.update(data)
    return h.finalize(), algorithm


def digest_info(algorithm: hashes.HashAlgorithm, digest: bytes) -> bytes:
    """DER DigestInfo for PKCS#1 v1.5 signing with a raw CKM_RSA_PKCS."""
    check_hash(algorithm)
    if len(digest) != algorithm.digest_size:
        raise UnsupportedKeyOperation(f"{algorithm.name} digest must be {algorithm.digest_size}")
    return _DIGEST_INFO_PREFIX[algorithm.name] + digest


def pss_mgf_hash(pad: padding.PSS) -> hashes.HashAlgorithm:
    """The MGF1 hash of a PSS padding (only MGF1 exists in cryptography)."""
    mgf = pad.mgf
    if not isinstance(mgf, padding.MGF1):
        raise UnsupportedKeyOperation(f"PSS mask generation {type(mgf).__name__} not supported")
    return check_hash(mgf._algorithm)


def pss_salt_length(pad: padding.PSS, algorithm: hashes.HashAlgorithm, key_size: int) -> int:
    """Salt length in bytes as cryptography would use it when signing (RFC 8017 §9.1.1)."""
    salt = pad._salt_length
    em_len = (key_size - 1 + 7) // 8
    max_len = em_len - algorithm.digest_size - 2
    if isinstance(salt, padding._MaxLength):
        return max_len
    if isinstance(salt, padding._DigestLength):
        return algorithm.digest_size
    if isinstance(salt, padding._Auto):
        raise UnsupportedKeyOperation("PSS salt length AUTO is only valid when verifying")
    if not isinstance(salt, int) or salt < 0 or salt > max_len:
        raise UnsupportedKeyOperation(f"PSS salt length {salt!r} is invalid for this key")
    return salt


def _mgf1(seed: bytes, length: int, algorithm: hashes.HashAlgorithm) -> bytes:
    out = b""
    counter = 0
    while len(out) < length:
        h = hashes.Hash(algorithm)
        h.update(seed + counter.to_bytes(4, "big"))
        out += h.finalize()
        counter += 1
    return out[:length]


def oaep_decode(
    em: bytes,
    key_size: int,
    algorithm: hashes.HashAlgorithm,
    mgf_hash: hashes.HashAlgorithm,
    label: bytes | None,
) -> bytes:
    """EME-OAEP decoding (RFC 8017 §7.1.2 step 3) of a raw RSA decryption result.

    For tokens that decrypt raw RSA (CKM_RSA_X_509) but know OAEP only with SHA-1. Every
    failure raises the same ValueError after the same checks, so callers learn nothing about
    which check failed.
    """
    k = (key_size + 7) // 8
    h_len = algorithm.digest_size
    em = em.rjust(k, b"\x00")
    if len(em) != k or k < 2 * h_len + 2:
        raise ValueError("decryption failed")
    l_hash = hashes.Hash(algorithm)
    l_hash.update(label or b"")
    expected = l_hash.finalize()
    masked_seed, masked_db = em[1 : 1 + h_len], em[1 + h_len :]
    seed = bytes(a ^ b for a, b in zip(masked_seed, _mgf1(masked_db, h_len, mgf_hash), strict=True))
    db = bytes(a ^ b for a, b in zip(masked_db, _mgf1(seed, k - h_len - 1, mgf_hash), strict=True))
    good = hmac.compare_digest(db[:h_len], expected) & (em[0] == 0)
    index = 0  # position of the 0x01 separator; scan everything, no early exit
    bad_padding = False
    for i, byte in enumerate(db[h_len:], start=h_len):
        is_one = byte == 1
        take = is_one and index == 0
        bad_padding |= index == 0 and byte not in (0, 1)
        index = i if take else index
    if not good or bad_padding or index == 0:
        raise ValueError("decryption failed")
    return db[index + 1 :]
