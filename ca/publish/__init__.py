"""Publishing certificates to an LDAP directory: the CA's publication jobs and the writer.

The public API, shared with the gateway (which publishes the certificates it enrols the same
way): :class:`DirectoryWriter` and its errors.  The CA's job runner is
:mod:`ca.publish.publisher`.
"""

from ca.publish.ldapwrite import DirectorySession, DirectoryWriter, LdapUnavailable, PublishError

__all__ = ["DirectorySession", "DirectoryWriter", "LdapUnavailable", "PublishError"]
