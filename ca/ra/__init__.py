"""The RA service of the bundled CA (the SwissSign RA manual's RA API and its helpers).

Built on the one order store (:mod:`ca.store`) and the one issuance path
(:class:`ca.authority.CertificateAuthority`): API users and keys with JWTs, the REST API and
its OpenAPI document, DNS domain pre-validation and CAA, mailbox-control challenges, mail
notifications, server-side key generation with PKCS#12 pick-up, and the clean-up of lost
orders. Settings: the ``ra:`` section of ca.yaml (:mod:`ca.settings.ra`).
"""
