"""Why the CA refuses to issue: typed errors of :mod:`ca.profiles.builder`,
:mod:`ca.profiles.subject`,
:mod:`ca.hierarchy` and :mod:`ca.profiles.lint`.

Each carries a one-line, user-presentable reason (``str(err)``); the order fails with it.
"""

from __future__ import annotations

from config.errors import CmcgateError


class ProfileError(CmcgateError):
    """A certificate cannot be issued under the requested profile."""


class KeyNotAllowed(ProfileError):
    """The subject public key is not one the S/MIME BR profile accepts (RSA < 2048, P-521...)."""


class ValidityTooLong(ProfileError):
    """The requested lifetime exceeds the BR maximum or outlives the issuing CA."""


class EmailNotAllowed(ProfileError):
    """An address is malformed or outside the account's validated domains."""


class SubjectNotComposable(ProfileError):
    """No compliant subject can be made from the request and the validated data."""


class EndpointInvalid(ProfileError):
    """A CRL / caIssuers / OCSP / CPS URL the profile would embed is not allowed."""


class SerialInvalid(ProfileError):
    """A caller-chosen serial number is outside 64..159 bits or not positive."""


class HierarchyError(ProfileError):
    """A CA or infrastructure certificate cannot be built as asked."""
