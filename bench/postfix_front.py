"""The production topology, checked and measured: Postfix in front of the gateway.

    .venv/bin/python bench/postfix_front.py                 # checks + throughput (~1 min)
    .venv/bin/python bench/postfix_front.py --messages 500  # fewer messages

A private Postfix instance (bench/postfix_instance.py) hands every message to the gateway
before queueing it (``smtpd_proxy_filter``, the configuration in docs/deployment.md); the
gateway (``cmcgate gateway run``, a separate process) signs and encrypts and hands the result
back to Postfix on a second smtpd, which queues it and relays it to a recording sink.
Checks, on real sockets:

1. alice -> bob arrives signed and encrypted; ``openssl cms`` decrypts alice's copy and
   verifies the signature against the bench CA;
2. a recipient without a certificate under encrypt=mandatory: the client gets Postfix's
   4xx (the gateway's tempfail passed through) and nothing arrives;
3. gateway down: the client gets a 4xx from Postfix and nothing arrives;
4. the after-queue way (``content_filter``): with the gateway down Postfix keeps the mail
   queued; once the gateway runs, ``postfix flush`` delivers it once, signed and encrypted.

Then throughput: ``smtp-source -s 8 -l 10240`` into Postfix with the gateway in front of
its queue (sign+encrypt; Postfix then relays to ``smtp-sink``) against the same Postfix
relaying straight to ``smtp-sink``, in the same run.
Exit status 0 only if every check passed; the numbers are printed, never asserted.
"""

from __future__ import annotations

import argparse
import email
import functools
import importlib.util
import os
import smtplib
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
if str(ROOT / "bench") not in sys.path:
    sys.path.append(str(ROOT / "bench"))

from postfix_instance import (  # noqa: E402
    PostfixInstance,
    SmtpSink,
    ensure_postfix,
    free_port,
    smtp_source,
)

from gateway.devservices import SmtpSink as RecordingSink  # noqa: E402


@functools.cache
def _bench_gateway():  # type: ignore[no-untyped-def]
    """bench/gateway.py (its module name would clash with the ``gateway`` package)."""
    spec = importlib.util.spec_from_file_location("bench_gateway", ROOT / "bench" / "gateway.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_gateway"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


#: What docs/deployment.md tells administrators to add to main.cf (before-queue filter).
PROXY_MAIN_CF = """
smtpd_proxy_filter = 127.0.0.1:{gateway_port}
smtpd_proxy_timeout = 120s
smtpd_proxy_options = speed_adjust
"""

#: The after-queue alternative (docs/deployment.md): Postfix queues first, hands the
#: message to the gateway with its smtp client, and takes it back on a second smtpd.
CONTENT_FILTER_MAIN_CF = """
content_filter = cmcgate:[127.0.0.1]:{gateway_port}
"""
#: Both ways, the gateway hands its output back to Postfix on a second smtpd (no filter).
REINJECT_MASTER_CF = """
127.0.0.1:{reinject_port} inet n -    n       -       -       smtpd
  -o content_filter=
  -o smtpd_proxy_filter=
  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters
  -o smtpd_relay_restrictions=permit_mynetworks,reject
  -o mynetworks=127.0.0.0/8
  -o smtpd_authorized_xforward_hosts=127.0.0.0/8
"""
CONTENT_FILTER_MASTER_CF = (
    """
cmcgate   unix  -       -       n       -       10      smtp
  -o smtp_data_done_timeout=1200s
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
"""
    + REINJECT_MASTER_CF
)

MESSAGE = (
    "From: Alice <alice@example.org>\r\nTo: Bob <bob@example.net>\r\n"
    "Subject: through Postfix\r\nMIME-Version: 1.0\r\n"
    "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
    "Grüezi Bob,\r\nthis went Postfix -> cmcgate -> next hop.\r\n"
).encode()


def run_gateway(config: Path, log: Path):  # type: ignore[no-untyped-def]
    """``cmcgate gateway run`` as a child, ready once it listens (bench/gateway.py's runner)."""
    return _bench_gateway().GatewayRun(config, log)


def send(port: int, sender: str, recipients: list[str], content: bytes) -> tuple[int, str]:
    """The reply the client finally gets: 250, or the first refusal's code and text."""
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            refused = client.sendmail(sender, recipients, content)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        return code, text.decode(errors="replace")
    except smtplib.SMTPResponseException as exc:
        return exc.smtp_code, exc.smtp_error.decode(errors="replace")
    if refused:
        code, text = next(iter(refused.values()))
        return code, text.decode(errors="replace")
    return 250, "OK"


def wait_received(sink: RecordingSink, count: int, seconds: float = 30) -> list:  # type: ignore[type-arg]
    """Messages for bob once the sink holds ``count`` of them or ``seconds`` passed (Postfix's
    own notices to the postmaster do not count)."""
    deadline = time.monotonic() + seconds

    def for_bob() -> list:  # type: ignore[type-arg]
        return [m for m in sink.received() if "bob@example.net" in m.rcpt_tos]

    while len(for_bob()) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    return for_bob()


def openssl_decrypt_verify(work: Path, content: bytes) -> str:
    (work / "arrived.eml").write_bytes(content)
    decrypt = subprocess.run(
        ["openssl", "cms", "-decrypt", "-in", str(work / "arrived.eml"),
         "-recip", str(work / "alice.pem"), "-inkey", str(work / "alice.key")],
        capture_output=True,
    )  # fmt: skip
    if decrypt.returncode != 0:
        return f"decrypt failed: {decrypt.stderr.decode(errors='replace')}"
    (work / "decrypted.eml").write_bytes(decrypt.stdout)
    verify = subprocess.run(
        ["openssl", "cms", "-verify", "-in", str(work / "decrypted.eml"),
         "-CAfile", str(work / "ca.pem"), "-purpose", "any"],
        capture_output=True,
    )  # fmt: skip
    if verify.returncode != 0:
        return f"verify failed: {verify.stderr.decode(errors='replace')}"
    # The gateway made the 8-bit body 7-bit before signing: decode it to compare.
    body = email.message_from_bytes(verify.stdout).get_payload(decode=True)
    if not isinstance(body, bytes) or "Grüezi Bob".encode() not in body:
        return "verified content is not the message"
    return "ok"


def checks(work: Path, setup, config_for) -> list[tuple[str, bool, str]]:  # type: ignore[no-untyped-def]
    results: list[tuple[str, bool, str]] = []
    sink = RecordingSink().start()
    gateway_port, postfix_port, reinject_port = free_port(), free_port(), free_port()
    config = config_for(gateway_port, reinject_port)
    gateway = run_gateway(config, work / "gateway-checks.log")
    postfix = PostfixInstance(
        work / "postfix-proxy", postfix_port, sink.port,
        extra_main_cf=PROXY_MAIN_CF.format(gateway_port=gateway_port),
        extra_master_cf=REINJECT_MASTER_CF.format(reinject_port=reinject_port),
    )  # fmt: skip
    try:
        with postfix:
            code, text = send(postfix_port, "alice@example.org", ["bob@example.net"], MESSAGE)
            arrived = wait_received(sink, 1)
            detail = f"{code} {text}; {len(arrived)} arrived"
            if code == 250 and len(arrived) == 1:
                detail += "; openssl: " + openssl_decrypt_verify(work, arrived[0].content)
            ok = detail.endswith("openssl: ok")
            results.append(("signed+encrypted, openssl decrypts and verifies", ok, detail))

            code, text = send(postfix_port, "alice@example.org", ["carol@example.net"], MESSAGE)
            arrived = wait_received(sink, 2, 3)
            ok = 400 <= code < 500 and len(arrived) == 1
            detail = f"{code} {text}; {len(arrived)} arrived in all"
            results.append(("no certificate, encrypt mandatory -> 4xx", ok, detail))

            gateway.stop()
            code, text = send(postfix_port, "alice@example.org", ["bob@example.net"], MESSAGE)
            arrived = wait_received(sink, 2, 3)
            ok = 400 <= code < 500 and len(arrived) == 1
            detail = f"{code} {text}; {len(arrived)} arrived in all"
            results.append(("gateway down -> 4xx", ok, detail))
    finally:
        gateway.stop()
        sink.stop()
    return results


def content_filter_checks(work: Path, config_for) -> list[tuple[str, bool, str]]:  # type: ignore[no-untyped-def]
    """After-queue: the gateway's 4xx leaves the mail deferred in Postfix's queue."""
    results: list[tuple[str, bool, str]] = []
    sink = RecordingSink().start()
    gateway_port, postfix_port, reinject_port = free_port(), free_port(), free_port()
    config = config_for(gateway_port, reinject_port)
    postfix = PostfixInstance(
        work / "postfix-content-filter", postfix_port, sink.port,
        extra_main_cf=CONTENT_FILTER_MAIN_CF.format(gateway_port=gateway_port),
        extra_master_cf=CONTENT_FILTER_MASTER_CF.format(reinject_port=reinject_port),
    )  # fmt: skip
    gateway = None
    try:
        with postfix:
            # Gateway not running yet: Postfix accepts (250) and keeps the mail queued.
            code, text = send(postfix_port, "alice@example.org", ["bob@example.net"], MESSAGE)
            time.sleep(3)
            queued = not postfix.queue_is_empty() and not sink.received()
            results.append(
                ("content_filter, gateway down: mail stays queued", code == 250 and queued,
                 f"{code} {text}; queue empty: {postfix.queue_is_empty()}")
            )  # fmt: skip
            gateway = run_gateway(config, work / "gateway-content-filter.log")
            postfix.flush()
            arrived = wait_received(sink, 1, 30)
            detail = f"{len(arrived)} arrived after flush"
            if len(arrived) == 1:
                detail += "; openssl: " + openssl_decrypt_verify(work, arrived[0].content)
            results.append(
                ("content_filter, gateway back: delivered signed+encrypted once",
                 detail.endswith("openssl: ok"), detail)
            )  # fmt: skip
    finally:
        if gateway is not None:
            gateway.stop()
        sink.stop()
    return results


def throughput(work: Path, config_for, messages: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """msg/s: Postfix relaying straight to smtp-sink, and Postfix -> gateway -> smtp-sink."""
    rates = []
    for with_gateway in (False, True):
        sink_port, postfix_port, gateway_port = free_port(), free_port(), free_port()
        tag = "gateway" if with_gateway else "plain"
        sink = SmtpSink(sink_port, work / f"sink-{tag}.log").start()
        gateway = None
        extra = ""
        master = ""
        if with_gateway:
            reinject_port = free_port()
            config = config_for(gateway_port, reinject_port)
            gateway = run_gateway(config, work / "gateway-load.log")
            extra = PROXY_MAIN_CF.format(gateway_port=gateway_port)
            master = REINJECT_MASTER_CF.format(reinject_port=reinject_port)
        postfix = PostfixInstance(
            work / f"postfix-{tag}", postfix_port, sink_port,
            extra_main_cf=extra, extra_master_cf=master,
        )  # fmt: skip
        try:
            with postfix:
                smtp_source(postfix_port, messages=100, sessions=8, length=10240)
                sink.wait_for(100, 120)
                started = time.perf_counter()
                smtp_source(postfix_port, messages=messages, sessions=8, length=10240)
                if not sink.wait_for(100 + messages, 300):
                    raise RuntimeError(f"sink counted {sink.counted()}:\n{postfix.log_tail()}")
                rates.append(messages / (time.perf_counter() - started))
        finally:
            if gateway is not None:
                gateway.stop()
            sink.stop()
    return rates[0], rates[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    ensure_postfix()
    bench = _bench_gateway()
    work = Path(tempfile.mkdtemp(prefix="cmcgate-postfix-front-"))
    os.chmod(work, 0o755)
    try:
        setup = bench.prepare(work)
        # alice.pem is alice's certificate followed by the CA's: the CA alone for -CAfile.
        pem = (work / "alice.pem").read_text()
        marker = "-----BEGIN CERTIFICATE-----"
        (work / "ca.pem").write_text(marker + pem.split(marker)[2])

        def config_for(port: int, next_hop_port: int) -> Path:
            return setup.config("sign+encrypt", port, next_hop_port)  # type: ignore[no-any-return]

        failed = 0
        outcomes = checks(work, setup, config_for) + content_filter_checks(work, config_for)
        for name, ok, detail in outcomes:
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
        plain, filtered = throughput(work, config_for, args.messages)
        print(
            f"smtp-source -s 8 -l 10240 -m {args.messages}, load average"
            f" {os.getloadavg()[0]:.1f}: postfix -> smtp-sink {plain:.0f} msg/s;"
            f" postfix -> cmcgate sign+encrypt -> smtp-sink {filtered:.0f} msg/s"
            f" ({filtered / plain:.2f}x)"
        )
        return 1 if failed else 0
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
