"""LDAP publication of the bundled CA's certificates, against a real slapd.

One CA (software keys) is initialised per module with ``ca.ldap`` set and copied for each test;
the copy's ``ca.ldap.url`` points at that test's slapd.  Certificates are issued and revoked
through :class:`CertificateAuthority`, the jobs worked off by :class:`LdapPublisher`, and the
directory read back with ldap3.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from apscheduler.schedulers.background import BackgroundScheduler
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ca.authority import CertificateAuthority
from ca.init import initialise
from ca.keys import KeyType
from ca.publish.publisher import LdapPublisher, register_publish_command, schedule_publisher
from ca.store.audit import AuditEvent, audit_records, verify_audit
from ca.store.model import JobKind, JobStatus
from gateway.devservices import Slapd
from tests.certbuild import email_csr

DOMAIN = "example.org"
PEOPLE = "ou=people,dc=example,dc=org"
DER = serialization.Encoding.DER
CERT = "userCertificate;binary"


@pytest.fixture(scope="module")
def template_ca(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("template") / "ca"
    initialise(
        directory,
        key_backend="software",
        key_type=KeyType.EC_P256,
        progress=lambda _line: None,
        base_url="http://pki.example.org",
        email_domains=(DOMAIN,),
        product_id="silver",
        ldap_url="ldap://127.0.0.1:1",  # each test's copy points at its own slapd
        ldap_bind_dn="cn=admin,dc=example,dc=org",
        ldap_base_dn=PEOPLE,
        ldap_password_file="ldap.pass",
    )
    return directory


@dataclass
class Setup:
    ca: CertificateAuthority
    slapd: Slapd
    directory: Path

    def publisher(self, **options: Any) -> LdapPublisher:
        assert self.ca.settings.ca.ldap is not None
        return LdapPublisher(self.ca.settings.ca.ldap, self.ca.store, **options)

    def issue(self, email: str) -> x509.Certificate:
        key = ec.generate_private_key(ec.SECP256R1())
        csr = email_csr(key, email)
        result = self.ca.submit(csr.public_bytes(DER), "totemoag.ra", "silver", requested_by="test")
        assert result.certificate is not None
        return result.certificate

    def entries(self, email: str) -> dict[str, list[bytes]]:
        """DN -> userCertificate values of the entries with this mail, read from slapd."""
        with self.slapd.connection() as conn:
            conn.search(PEOPLE, f"(mail={email})", attributes=["userCertificate;binary"])
            return {
                r["dn"]: list(r["raw_attributes"].get(CERT, []))
                for r in conn.response
                if r["type"] == "searchResEntry"
            }


def _setup(template: Path, tmp_path: Path, slapd: Slapd, *, people: bool = True) -> Setup:
    directory = tmp_path / "ca"
    shutil.copytree(template, directory)
    ca_yaml = directory / "ca.yaml"
    ca_yaml.write_text(ca_yaml.read_text().replace("ldap://127.0.0.1:1", slapd.url))
    (directory / "ldap.pass").write_text(slapd.admin_password + "\n")
    if people:
        with slapd.connection() as conn:
            assert conn.add(PEOPLE, ["organizationalUnit"], {"ou": "people"}), conn.result
    return Setup(CertificateAuthority.open(ca_yaml), slapd, directory)


@pytest.fixture
def setup(template_ca: Path, tmp_path: Path, slapd: Slapd) -> Iterator[Setup]:
    made = _setup(template_ca, tmp_path, slapd)
    try:
        yield made
    finally:
        made.ca.close()


def der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(DER)


def serial(cert: x509.Certificate) -> str:
    return f"{cert.serial_number:x}"


# -- publish ----------------------------------------------------------------------------------


def test_an_issued_certificate_is_found_in_the_directory_under_its_address(
    setup: Setup,
) -> None:
    cert = setup.issue("alice@example.org")
    (job,) = setup.ca.store.find_jobs(serial=cert.serial_number)
    assert (job.kind, job.status, job.email) == (
        JobKind.PUBLISH,
        JobStatus.PENDING,
        "alice@example.org",
    )

    run = setup.publisher().run_due()

    assert (run.published, run.retried, run.failed) == (1, 0, 0)
    assert setup.entries("alice@example.org") == {f"mail=alice@example.org,{PEOPLE}": [der(cert)]}
    assert setup.ca.store.get_job(job.id).status is JobStatus.SUCCESS
    with setup.slapd.connection() as conn:
        conn.search(PEOPLE, "(mail=alice@example.org)", attributes=["objectClass", "sn", "cn"])
        entry = conn.entries[0]
        assert "inetOrgPerson" in entry.objectClass.values
        assert (entry.sn.value, entry.cn.value) == ("alice", "alice@example.org")
    (record,) = audit_records(setup.ca.store, event_type=AuditEvent.PUBLISH)
    assert record.subject == serial(cert)
    assert record.details["result"] == "entry created"
    assert verify_audit(setup.ca.store).ok


def test_a_person_already_in_the_directory_gets_the_certificate_on_their_own_entry(
    setup: Setup,
) -> None:
    bob = f"uid=bob,{PEOPLE}"
    with setup.slapd.connection() as conn:
        attrs = {"uid": "bob", "cn": "Bob Muster", "sn": "Muster", "mail": "Bob@Example.org"}
        assert conn.add(bob, ["inetOrgPerson"], attrs), conn.result
    cert = setup.issue("bob@example.org")

    assert setup.publisher().run_due().published == 1

    assert setup.entries("bob@example.org") == {bob: [der(cert)]}


def test_publishing_the_same_certificate_twice_changes_nothing(setup: Setup) -> None:
    cert = setup.issue("carol+smime@example.org")
    publisher = setup.publisher()
    publisher.run_due()
    again = setup.ca.store.enqueue_job("publish", cert.serial_number, "carol+smime@example.org")

    assert publisher.run_due().published == 1

    assert setup.ca.store.get_job(again.id).status is JobStatus.SUCCESS
    dn = rf"mail=carol\2Bsmime@example.org,{PEOPLE}"  # the + of the address escaped in the RDN
    assert setup.entries("carol+smime@example.org") == {dn: [der(cert)]}
    last = audit_records(setup.ca.store, event_type=AuditEvent.PUBLISH)[-1]
    assert last.details["result"] == "already present"


# -- unpublish --------------------------------------------------------------------------------


def test_a_revoked_certificate_disappears_from_the_directory_and_the_others_stay(
    setup: Setup,
) -> None:
    old = setup.issue("dave@example.org")
    new = setup.issue("dave@example.org")
    publisher = setup.publisher()
    assert publisher.run_due().published == 2
    dn = f"mail=dave@example.org,{PEOPLE}"
    assert sorted(setup.entries("dave@example.org")[dn]) == sorted([der(old), der(new)])

    setup.ca.revoke(old.serial_number, "superseded", by="operator")
    unpublish = [j for j in setup.ca.store.find_jobs(serial=old.serial_number)
                 if j.kind is JobKind.UNPUBLISH]  # fmt: skip
    assert [j.status for j in unpublish] == [JobStatus.PENDING]
    run = publisher.run_due()

    assert (run.unpublished, run.retried) == (1, 0)
    assert setup.entries("dave@example.org") == {dn: [der(new)]}
    assert setup.ca.store.get_job(unpublish[0].id).status is JobStatus.SUCCESS
    # removing what is not there (again) is done, not an error
    setup.ca.store.enqueue_job("unpublish", old.serial_number, "dave@example.org")
    assert publisher.run_due().unpublished == 1
    last = audit_records(setup.ca.store, event_type=AuditEvent.PUBLISH)[-1]
    assert last.details["result"] == "not present"


def test_a_certificate_revoked_before_its_publication_ran_is_never_published(
    setup: Setup,
) -> None:
    setup.slapd.pause()
    cert = setup.issue("erin@example.org")
    setup.ca.revoke(cert.serial_number, "keyCompromise", by="operator")
    setup.slapd.start()

    run = setup.publisher().run_due()

    assert (run.published, run.unpublished, run.retried) == (1, 1, 0)
    assert setup.entries("erin@example.org") == {}
    results = [r.details["result"] for r in audit_records(setup.ca.store, event_type="publish")]
    assert results == ["not published: certificate REVOKED", "no entry"]


# -- the directory down or refusing -----------------------------------------------------------


def test_an_ldap_outage_delays_publication_and_loses_nothing(setup: Setup) -> None:
    cert = setup.issue("frank@example.org")
    (job,) = setup.ca.store.find_jobs(serial=cert.serial_number)
    publisher = setup.publisher(max_attempts=1)  # an outage never uses up the attempts
    t0 = datetime.now(UTC)
    setup.slapd.pause()

    first = publisher.run_due(now=t0)
    second = publisher.run_due(now=t0 + timedelta(minutes=1, seconds=1))

    assert (first.retried, second.retried, first.failed + second.failed) == (1, 1, 0)
    waiting = setup.ca.store.get_job(job.id)
    assert waiting.status is JobStatus.RETRY
    assert waiting.attempts == 2
    assert waiting.next_attempt_at > t0 + timedelta(minutes=2)  # back-off doubled
    assert "cannot reach" in (waiting.last_error or "")
    assert publisher.run_due(now=t0 + timedelta(minutes=2)).handled == 0  # not due yet

    setup.slapd.start()
    run = publisher.run_due(now=t0 + timedelta(minutes=4))

    assert run.published == 1
    assert setup.ca.store.get_job(job.id).status is JobStatus.SUCCESS
    assert setup.entries("frank@example.org") == {f"mail=frank@example.org,{PEOPLE}": [der(cert)]}


def test_a_wrong_ldap_password_holds_the_jobs_until_it_is_fixed(setup: Setup) -> None:
    (setup.directory / "ldap.pass").write_text("not-the-password\n")
    cert = setup.issue("gina@example.org")
    (job,) = setup.ca.store.find_jobs(serial=cert.serial_number)
    t0 = datetime.now(UTC)

    run = setup.publisher(max_attempts=1).run_due(now=t0)

    assert run.retried == 1
    waiting = setup.ca.store.get_job(job.id)
    assert waiting.status is JobStatus.RETRY
    assert "bind as cn=admin,dc=example,dc=org" in (waiting.last_error or "")
    (setup.directory / "ldap.pass").write_text(setup.slapd.admin_password + "\n")
    assert setup.publisher().run_due(now=t0 + timedelta(minutes=2)).published == 1


def test_a_directory_that_refuses_the_entry_fails_the_job_after_its_attempts(
    template_ca: Path, tmp_path: Path, slapd: Slapd
) -> None:
    made = _setup(template_ca, tmp_path, slapd, people=False)  # ou=people does not exist
    try:
        cert = made.issue("hugo@example.org")
        (job,) = made.ca.store.find_jobs(serial=cert.serial_number)
        publisher = made.publisher(max_attempts=2)
        t0 = datetime.now(UTC)

        first = publisher.run_due(now=t0)
        retry = made.ca.store.get_job(job.id)
        second = publisher.run_due(now=t0 + timedelta(minutes=5))

        assert (first.retried, second.failed) == (1, 1)
        assert retry.status is JobStatus.RETRY
        assert "noSuchObject" in (retry.last_error or "")
        failed = made.ca.store.get_job(job.id)
        assert failed.status is JobStatus.FAILED
        assert "FAILED after 2 attempts" in second.errors[0]
        (record,) = audit_records(made.ca.store, event_type=AuditEvent.PUBLISH)
        assert (record.subject, record.details["result"]) == (serial(cert), "failed")
        assert made.ca.certificates(email="hugo@example.org")[0].serial == serial(cert)
    finally:
        made.ca.close()


# -- how it runs: the CA service's schedule and `cmcgate ca publish` --------------------------


def test_the_ca_service_schedule_publishes_due_certificates(setup: Setup) -> None:
    scheduler = BackgroundScheduler(timezone="UTC")
    schedule_publisher(scheduler, lambda: setup.ca)
    cert = setup.issue("ida@example.org")

    scheduled = scheduler.get_job("ldap-publish")
    assert scheduled.trigger.interval == timedelta(seconds=10)
    scheduled.func()  # one tick, as the running scheduler would do it

    assert setup.entries("ida@example.org") == {f"mail=ida@example.org,{PEOPLE}": [der(cert)]}


def _publish_cli(directory: Path) -> int:
    parser = argparse.ArgumentParser()
    register_publish_command(parser.add_subparsers())
    args = parser.parse_args(["publish", "--dir", str(directory)])
    return int(args.func(args))


def test_an_operator_runs_the_due_publications_once_from_the_command_line(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = setup.issue("jan@example.org")
    setup.slapd.pause()

    assert _publish_cli(setup.directory) == 1
    out, err = capsys.readouterr()
    assert "retry 1" in out
    assert "RETRY at" in err

    setup.slapd.start()
    setup.ca.store.enqueue_job("publish", cert.serial_number, "jan@example.org")
    assert _publish_cli(setup.directory) == 0
    assert "published 1" in capsys.readouterr().out
    assert setup.entries("jan@example.org") == {f"mail=jan@example.org,{PEOPLE}": [der(cert)]}
