"""Benchmark the gateway end to end: smtp-source -> gateway -> smtp-sink, against Postfix.

    .venv/bin/python bench/gateway.py                    # all modes, 2000 messages each
    .venv/bin/python bench/gateway.py --profile large    # cProfile of the 25 MB message
    .venv/bin/python bench/gateway.py --messages 500 --skip-large
    .venv/bin/python bench/gateway.py --profile sign+encrypt   # cProfile of the SMTP thread
    .venv/bin/python bench/gateway.py --profile sign+encrypt --py-spy /tmp/pyspy/bin/py-spy

Load: Postfix's ``smtp-source`` with 8 parallel sessions and 10 KB messages
(``smtp-source -s 8 -l 10240 -m N``) from alice@example.org to bob@example.net; next hop:
Postfix's ``smtp-sink -c``, whose running counter says when the N-th message has arrived.  A
rate is N divided by the time from smtp-source's start until the sink has counted it.

Baseline, measured in the same run under the same load to the same kind of sink: a private
Postfix instance (bench/postfix_instance.py) relaying to smtp-sink — Postfix is what sits in
front of the gateway in production.  The messages are split into ``--rounds`` rounds (2); a
round measures Postfix, then every gateway mode, and Postfix once more after the last
round, so that a slow spell of a shared machine hits both sides.  A rate is all messages over
all time of its runs; the spread of the runs is printed next to it.

Gateway modes, each a fresh gateway process built by ``gateway.smtp.service.start`` from its own
properties file, sharing one SQLite store and a software key backend: ``pass`` (sign=never,
encrypt=never), ``sign`` (sign=always with alice's RSA-2048 key, imported with
``cmcgate gateway certs import``), ``sign+encrypt`` (encrypt=mandatory, bob's certificate
imported; the sender's own certificate is added as a recipient, as in production), and both
``pass`` and ``sign+encrypt`` again with a DKIM key for example.org.  Every mode starts with
a warm-up of 100 messages; afterwards the gateway's log must show every message relayed
(250) with the mode's actions, or the bench fails.

Large message: one 25 MiB message (a base64 attachment) sign+encrypt through a fresh gateway
process (``smtp-source -F``): MB/s end to end and inside the pipeline, the time split into
receiving / pipeline / relaying, and the process's peak RSS
(``resource.getrusage`` in that process) over its RSS before the message, against the
message size.  For reference: Postfix relaying the same file, the gateway passing it through
without crypto, and smtp-source handing it straight to smtp-sink (the tools' own floor).

Targets (reported, never asserted): pass >= 1.0x Postfix, sign+encrypt >= 0.5x Postfix,
25 MB sign+encrypt >= 100 MB/s with peak RSS growth <= 4x the message.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# ROOT before bench/ (this script's directory): ``gateway`` is the package, not this file.
sys.path[:0] = [str(ROOT)]
if str(ROOT / "bench") not in sys.path:
    sys.path.append(str(ROOT / "bench"))

from postfix_instance import (  # noqa: E402
    PostfixError,
    PostfixInstance,
    SmtpSink,
    ensure_postfix,
    free_port,
    smtp_source,
    wait_for_port,
)

SENDER = "alice@example.org"
RECIPIENT = "bob@example.net"
WARMUP = 100

#: mode -> (policy sign, policy encrypt, DKIM, the actions every copy must show)
MODES: dict[str, tuple[str, str, bool, str]] = {
    "pass": ("never", "never", False, "outbound,pass"),
    "pass+dkim": ("never", "never", True, "outbound,pass,dkim"),
    "sign": ("always", "never", False, "outbound,sign"),
    "sign+encrypt": ("always", "mandatory", False, "outbound,sign,encrypt"),
    "sign+encrypt+dkim": ("always", "mandatory", True, "outbound,sign,encrypt,dkim"),
}

CONFIG = """\
# bench/gateway.py, mode {mode}
cmcgate.gateway.listen=127.0.0.1:{port}
cmcgate.gateway.nextHop=127.0.0.1:{sink_port}
cmcgate.gateway.nextHopTls=off
cmcgate.gateway.hostname=gw.bench.localdomain
cmcgate.gateway.internalDomains=example.org
cmcgate.gateway.maxMessageSize=64M
cmcgate.gateway.allowedNetworks=127.0.0.0/8
cmcgate.policy.sign={sign}
cmcgate.policy.encrypt={encrypt}
cmcgate.policy.missingCertificate=tempfail
cmcgate.store.dsn=sqlite:///{work}/gateway.db
cmcgate.keys.backend=software
cmcgate.keys.directory={work}/keys
cmcgate.keys.passphraseFile={work}/keys.pass
"""

DKIM = """\
cmcgate.dkim.example.org.selector=bench
cmcgate.dkim.example.org.keyFile={work}/dkim.key
"""


# -- the gateway in a child process -------------------------------------------------------
def _rss_kb() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


def serve(config_path: str, profile: bool) -> None:
    """Child: run the gateway as ``cmcgate gateway run`` does; report on stdin's EOF."""
    from config.properties import load
    from gateway.cli import configure_logging
    from gateway.smtp.service import start

    configure_logging("info")  # as `cmcgate gateway run` does by default
    # Its own quarantine directory: nothing is written outside the bench's work directory.
    gateway = start(load(config_path), quarantine_dir=Path(config_path).parent / "quarantine")
    timings: list[float] = []
    last_span: list[float] = [0.0, 0.0]
    inner = gateway.handler.pipeline

    async def timed(transaction: Any) -> Any:
        started, wall = time.perf_counter(), time.time()
        try:
            return await inner(transaction)
        finally:
            timings.append(time.perf_counter() - started)
            last_span[:] = [wall, time.time()]

    gateway.handler.pipeline = timed
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        # The SMTP front runs in the controller's thread: profile that thread.
        gateway.controller.loop.call_soon_threadsafe(profiler.enable)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = usage.ru_utime + usage.ru_stime
    print(json.dumps({"ready": True, "rss_kb": _rss_kb()}), flush=True)
    sys.stdin.read()  # the parent closes stdin when done
    if profiler is not None:
        done = threading.Event()

        def disable() -> None:
            profiler.disable()
            done.set()

        gateway.controller.loop.call_soon_threadsafe(disable)
        done.wait(10)
    gateway.stop()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    report = {
        "maxrss_kb": usage.ru_maxrss,
        "cpu_seconds": usage.ru_utime + usage.ru_stime - cpu0,
        "pipeline_seconds": timings,
        "last_pipeline_span": last_span,
    }
    if profiler is not None:
        import io
        import pstats

        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(25)
        stats.sort_stats("cumulative").print_stats(40)
        report["profile"] = out.getvalue()
    print(json.dumps(report), flush=True)


class GatewayRun:
    """``cmcgate gateway run --config CONFIG`` as a child process, output to ``log``, as an
    administrator runs it; ready once the log shows ``ready`` (the line the command logs
    when it listens: with workers, once all of them do)."""

    def __init__(self, config: Path, log: Path, *, ready: str = "cmcgate gateway started") -> None:
        cmcgate = str(Path(sys.executable).parent / "cmcgate")
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                [cmcgate, "gateway", "run", "--config", str(config)],
                stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while ready not in log.read_text(errors="replace"):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"gateway did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


class GatewayProcess:
    """``bench/gateway.py --serve CONFIG`` as a child; :meth:`finish` returns its report."""

    def __init__(self, config: Path, port: int, log: Path, *, profile: bool = False) -> None:
        args = [sys.executable, __file__, "--serve", str(config)]
        if profile:
            args.append("--serve-profile")
        self.log = log
        with open(log, "wb") as err:
            self.process = subprocess.Popen(
                args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True
            )
        assert self.process.stdout is not None
        try:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"gateway did not start:\n{log.read_text()[-3000:]}")
            self.ready = json.loads(line)
            wait_for_port(port)
        except BaseException:
            self.kill()
            raise

    def finish(self) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.close()
        out = self.process.stdout.read()
        self.process.wait(30)
        if self.process.returncode != 0 or not out.strip():
            raise RuntimeError(f"gateway failed:\n{self.log.read_text()[-3000:]}")
        report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return report

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


_RESULT = re.compile(r"queue_id=\S+ from=<[^>]*> to=\S+ actions=(\S*) reply=(\d+)")


def check_log(log: Path, expected_actions: str, count: int) -> None:
    """Every message relayed (250) with the mode's actions, and ``count`` of them."""
    results = _RESULT.findall(log.read_text(errors="replace"))
    wrong = [r for r in results if r != (expected_actions, "250")]
    if wrong or len(results) != count:
        raise RuntimeError(
            f"{log}: {len(results)} messages logged, expected {count} with"
            f" actions={expected_actions} reply=250; unexpected: {wrong[:3]}"
        )


# -- set-up ---------------------------------------------------------------------------------
@dataclass
class Setup:
    work: Path

    def config(self, mode: str, port: int, sink_port: int) -> Path:
        sign, encrypt, dkim, _ = MODES[mode]
        text = CONFIG.format(
            mode=mode, port=port, sink_port=sink_port, sign=sign, encrypt=encrypt, work=self.work
        )
        if dkim:
            text += DKIM.format(work=self.work)
        path = self.work / f"{mode.replace('+', '-')}.properties"
        path.write_text(text)
        return path


def prepare(work: Path) -> Setup:
    """Keys and certificates: alice (internal, RSA-2048 key imported), bob (certificate)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from tests.gateway.certs import make_ca

    setup = Setup(work)
    (work / "keys.pass").write_text("bench-passphrase\n")
    os.chmod(work / "keys.pass", 0o600)
    ca = make_ca("Bench CA", "rsa")
    alice, bob = ca.issue(SENDER), ca.issue(RECIPIENT)
    pem = serialization.Encoding.PEM
    (work / "alice.pem").write_bytes(alice.cert.public_bytes(pem) + ca.cert.public_bytes(pem))
    (work / "bob.pem").write_bytes(bob.cert.public_bytes(pem))
    plain = (pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    (work / "alice.key").write_bytes(alice.key.private_bytes(*plain))
    dkim_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (work / "dkim.key").write_bytes(dkim_key.private_bytes(*plain))
    config = setup.config("sign+encrypt", free_port(), free_port())
    cmcgate = str(Path(sys.executable).parent / "cmcgate")
    cli = [cmcgate, "gateway", "certs", "import", "--config", str(config)]
    for email, cert, key in ((SENDER, "alice.pem", "alice.key"), (RECIPIENT, "bob.pem", None)):
        args = [*cli, "--email", email, "--cert", str(work / cert)]
        if key:
            args += ["--key", str(work / key)]
        done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise RuntimeError(f"certs import failed: {done.stderr or done.stdout}")
    return setup


def large_message(path: Path, size: int) -> int:
    """A multipart message of ``size`` bytes (CRLF counted) with a base64 attachment, written
    with LF line ends (smtp-source -F sends each line with CRLF)."""
    head = (
        f"From: <{SENDER}>\nTo: <{RECIPIENT}>\nSubject: bench large\nMIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="BENCH"\n\n'
        "--BENCH\nContent-Type: text/plain; charset=utf-8\n\nsee attachment\n"
        "--BENCH\nContent-Type: application/octet-stream\n"
        "Content-Transfer-Encoding: base64\n\n"
    ).encode()
    lines_budget = size - len(head) - head.count(b"\n") - 20
    raw = os.urandom(max(0, lines_budget * 76 // 78 * 3 // 4))
    body = base64.encodebytes(raw)
    message = head + body + b"--BENCH--\n"
    path.write_bytes(message)
    return len(message) + message.count(b"\n")


# -- measurements ---------------------------------------------------------------------------
def timed_run(port: int, sink: SmtpSink, messages: int, **source: Any) -> float:
    """Seconds from smtp-source's start until the sink has counted ``messages`` more."""
    target = sink.counted() + messages
    started = time.perf_counter()
    smtp_source(port, messages=messages, **source)
    if not sink.wait_for(target, 300):
        raise RuntimeError(f"sink counted {sink.counted()} of {target} messages")
    return time.perf_counter() - started


def measure_postfix(
    work: Path, messages: int, sessions: int, size: int, tag: str, big: Path | None = None
) -> dict[str, float]:
    sink_port, port = free_port(), free_port()
    sink = SmtpSink(sink_port, work / f"sink-postfix-{tag}.log").start()
    postfix = PostfixInstance(work / f"postfix-{tag}", port, sink_port)
    try:
        with postfix:
            timed_run(port, sink, WARMUP, sessions=sessions, length=size)
            seconds = timed_run(port, sink, messages, sessions=sessions, length=size)
            result = {"rate": messages / seconds, "seconds": seconds}
            if big is not None:
                result["large_seconds"] = timed_run(port, sink, 1, sessions=1, message_file=big)
    except (PostfixError, RuntimeError) as exc:
        raise RuntimeError(f"{exc}\n{postfix.log_tail()}") from None
    finally:
        sink.stop()
    return result


def measure_gateway(
    setup: Setup,
    mode: str,
    messages: int,
    sessions: int,
    size: int,
    *,
    profile: bool,
    py_spy: str | None = None,
) -> dict[str, Any]:
    work = setup.work
    sink_port, port = free_port(), free_port()
    config = setup.config(mode, port, sink_port)
    tag = mode.replace("+", "-")
    sink = SmtpSink(sink_port, work / f"sink-{tag}.log").start()
    log = work / f"gateway-{tag}.log"
    try:
        gateway = GatewayProcess(config, port, log, profile=profile and not py_spy)
    except BaseException:
        sink.stop()
        raise
    spy = None
    try:
        timed_run(port, sink, WARMUP, sessions=sessions, length=size)
        if profile and py_spy:
            raw = work / f"py-spy-{tag}.txt"
            spy = subprocess.Popen(
                [py_spy, "record", "--format", "raw", "--threads", "--rate", "250",
                 "-o", str(raw), "--pid", str(gateway.process.pid)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(1)
        seconds = timed_run(port, sink, messages, sessions=sessions, length=size)
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        report = gateway.finish()
        if spy is not None:
            report["profile"] = summarise_py_spy(work / f"py-spy-{tag}.txt")
    finally:
        if spy is not None and spy.poll() is None:
            spy.kill()
        gateway.kill()
        sink.stop()
    check_log(log, MODES[mode][3], WARMUP + messages)
    timings = report["pipeline_seconds"][WARMUP:]
    return {
        "rate": messages / seconds,
        "seconds": seconds,
        "cpu_ms_per_message": report["cpu_seconds"] * 1000 / (WARMUP + messages),
        "pipeline_ms": 1000 * sum(timings) / max(1, len(timings)),
        "profile": report.get("profile"),
    }


def measure_workers(
    setup: Setup, mode: str, workers: int, messages: int, sessions: int, size: int
) -> float:
    """msg/s of ``cmcgate gateway run`` with ``cmcgate.gateway.workers`` = ``workers``."""
    work = setup.work
    sink_port, port = free_port(), free_port()
    config = setup.config(mode, port, sink_port)
    text = config.read_text() + f"cmcgate.gateway.workers={workers}\n"
    config = config.with_name(f"{config.stem}-w{workers}.properties")
    config.write_text(text)
    tag = f"{mode.replace('+', '-')}-w{workers}"
    sink = SmtpSink(sink_port, work / f"sink-{tag}.log").start()
    log = work / f"gateway-{tag}.log"
    try:
        gateway = GatewayRun(config, log, ready=f"with {workers} workers")
    except BaseException:
        sink.stop()
        raise
    try:
        timed_run(port, sink, WARMUP, sessions=sessions, length=size)
        seconds = timed_run(port, sink, messages, sessions=sessions, length=size)
    finally:
        gateway.stop()
        sink.stop()
    check_log(log, MODES[mode][3], WARMUP + messages)
    return messages / seconds


def measure_direct(work: Path, big: Path) -> float:
    """Seconds for smtp-source to hand ``big`` straight to smtp-sink: the tools' own floor."""
    sink_port = free_port()
    sink = SmtpSink(sink_port, work / "sink-direct.log").start()
    try:
        timed_run(sink_port, sink, 1, sessions=1, length=10240)
        return min(timed_run(sink_port, sink, 1, sessions=1, message_file=big) for _ in range(3))
    finally:
        sink.stop()


def measure_large(
    setup: Setup, big: Path, size: int, *, profile: bool, mode: str = "sign+encrypt"
) -> dict[str, Any]:
    work = setup.work
    sink_port, port = free_port(), free_port()
    config = setup.config(mode, port, sink_port)
    tag = mode.replace("+", "-")
    sink = SmtpSink(sink_port, work / f"sink-large-{tag}.log").start()
    log = work / f"gateway-large-{tag}.log"
    try:
        gateway = GatewayProcess(config, port, log, profile=profile)
    except BaseException:
        sink.stop()
        raise
    try:
        timed_run(port, sink, 1, sessions=1, length=10240)  # warm: key, store, imports
        started = time.time()
        seconds = timed_run(port, sink, 1, sessions=1, message_file=big)
        report = gateway.finish()
    finally:
        gateway.kill()
        sink.stop()
    check_log(log, MODES[mode][3], 2)
    before_kb = gateway.ready["rss_kb"]
    peak_kb = report["maxrss_kb"]
    pipeline = report["pipeline_seconds"][-1]
    span = report["last_pipeline_span"]
    return {
        # From smtp-source's start to the pipeline's (the SMTP front receiving DATA), the
        # pipeline, and from its end until the sink counted the message (relaying).
        "phases": (span[0] - started, span[1] - span[0], started + seconds - span[1]),
        "bytes": size,
        "seconds": seconds,
        "mb_per_s": size / 1e6 / seconds,
        "pipeline_mb_per_s": size / 1e6 / pipeline,
        "rss_before_mb": before_kb / 1024,
        "peak_rss_mb": peak_kb / 1024,
        "growth_ratio": (peak_kb - before_kb) * 1024 / size,
        "profile": report.get("profile"),
    }


def summarise_py_spy(raw: Path, top: int = 30) -> str:
    """Self and inclusive sample counts per function from py-spy's collapsed stacks."""
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    threads: dict[str, int] = {}
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        threads[frames[0]] = threads.get(frames[0], 0) + count
        names = [re.sub(r" \((?:/[^)]*/)?([^/)]*)\)", r" (\1)", f) for f in frames[1:]]
        if names:
            own[names[-1]] = own.get(names[-1], 0) + count
        for name in set(names):
            inclusive[name] = inclusive.get(name, 0) + count
    if not total:
        return "py-spy recorded nothing"

    def table(counts: dict[str, int]) -> list[str]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [f"{100 * c / total:6.1f}%  {name}" for name, c in ranked]

    lines = [f"{total} samples; per thread:", *table(threads)]
    lines += ["", "self time:", *table(own), "", "inclusive:", *table(inclusive)]
    return "\n".join(lines)


# -- main -----------------------------------------------------------------------------------
@dataclass
class Runs:
    """Several timed runs of one configuration: overall rate and the spread of the runs."""

    messages: int = 0
    seconds: float = 0.0
    cpu_ms: float = 0.0
    pipeline_ms: float = 0.0
    rates: tuple[float, ...] = ()
    profile: str | None = None

    def add(self, result: dict[str, Any]) -> None:
        runs = len(self.rates)
        self.messages += round(result["rate"] * result["seconds"])
        self.seconds += result["seconds"]
        self.rates = (*self.rates, result["rate"])
        cpu, pipeline = result.get("cpu_ms_per_message", 0.0), result.get("pipeline_ms", 0.0)
        self.cpu_ms = (self.cpu_ms * runs + cpu) / (runs + 1)
        self.pipeline_ms = (self.pipeline_ms * runs + pipeline) / (runs + 1)
        self.profile = result.get("profile") or self.profile

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def spread(self) -> str:
        return "-".join(f"{r:.0f}" for r in (min(self.rates), max(self.rates)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2000, help="messages per mode, in all")
    parser.add_argument("--rounds", type=int, default=2, help="rounds the messages are split in")
    parser.add_argument("--sessions", type=int, default=8, help="smtp-source -s")
    parser.add_argument("--size", type=int, default=10240, help="smtp-source -l (bytes)")
    parser.add_argument("--large-mb", type=float, default=25, help="large message, MiB")
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--modes", nargs="*", choices=list(MODES), default=list(MODES))
    parser.add_argument(
        "--profile", choices=[*MODES, "large"], help="profile this mode's gateway (cProfile)"
    )
    parser.add_argument("--py-spy", metavar="PATH", help="profile with this py-spy instead")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--workers", type=int, default=0, metavar="N",
        help="also run pass and sign+encrypt with cmcgate.gateway.workers=N (msg/s only)",
    )  # fmt: skip
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--serve-profile", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.serve_profile)
        return
    ensure_postfix()
    s, rounds = args.sessions, max(1, args.rounds)
    n = max(1, args.messages // rounds)
    work = Path(tempfile.mkdtemp(prefix="cmcgate-bench-gateway-"))
    try:
        setup = prepare(work)
        big = None
        big_size = 0
        if not args.skip_large:
            big = work / "large.eml"
            big_size = large_message(big, int(args.large_mb * 1024 * 1024))
        print(
            f"load: smtp-source -s {s} -l {args.size} -m {n}, {rounds} rounds (each after"
            f" {WARMUP} warm-up messages), {SENDER} -> {RECIPIENT}; next hop smtp-sink;"
            f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start",
            flush=True,
        )
        postfix = Runs()
        results = {mode: Runs() for mode in args.modes}
        postfix_large = 0.0
        for number in range(rounds + 1):
            first = number == 0
            result = measure_postfix(work, n, s, args.size, f"r{number}", big if first else None)
            postfix.add(result)
            postfix_large = result.get("large_seconds", postfix_large)
            print(f"  round {number + 1}: postfix {result['rate']:.0f} msg/s", end="", flush=True)
            if number == rounds:
                print()
                break
            for mode in args.modes:
                profile = args.profile == mode and number == rounds - 1
                r = measure_gateway(
                    setup, mode, n, s, args.size, profile=profile, py_spy=args.py_spy
                )
                results[mode].add(r)
                print(f", {mode} {r['rate']:.0f}", end="", flush=True)
            print()
        baseline = postfix.rate
        print()
        print(
            f"{'':<27}{'msg/s':>7}{'runs':>11}{'vs postfix':>12}{'target':>8}"
            f"{'CPU ms/msg':>12}{'pipeline ms':>13}"
        )
        print(f"{'postfix relay':<27}{baseline:>7.0f}{postfix.spread:>11}{'1.00x':>12}")
        targets = {"pass": ">=1.0x", "sign+encrypt": ">=0.5x"}
        for mode, runs in results.items():
            print(
                f"{'gateway ' + mode:<27}{runs.rate:>7.0f}{runs.spread:>11}"
                f"{runs.rate / baseline:>11.2f}x{targets.get(mode, ''):>8}"
                f"{runs.cpu_ms:>12.2f}{runs.pipeline_ms:>13.2f}"
            )
        if args.workers > 1:
            for mode in ("pass", "sign+encrypt"):
                rate = measure_workers(setup, mode, args.workers, n * rounds, s, args.size)
                one = results[mode].rate if mode in results else 0.0
                versus = f", {rate / one:.2f}x one process" if one else ""
                print(
                    f"{'gateway ' + mode + f' x{args.workers}':<27}{rate:>7.0f}{'':>11}"
                    f"{rate / baseline:>11.2f}x{'':>8}   ({args.workers} workers{versus})"
                )
        for plain, dkim in (("pass", "pass+dkim"), ("sign+encrypt", "sign+encrypt+dkim")):
            if plain in results and dkim in results:
                ratio = results[dkim].rate / results[plain].rate
                print(f"DKIM on vs off ({plain}): {ratio:.2f}x")
        if big is not None:
            large = measure_large(setup, big, big_size, profile=args.profile == "large")
            large_pass = measure_large(setup, big, big_size, profile=False, mode="pass")
            direct_mb_s = big_size / 1e6 / measure_direct(work, big)
            postfix_mb_s = big_size / 1e6 / postfix_large
            print()
            print(
                f"large message {big_size / 1e6:.1f} MB, sign+encrypt through the gateway:"
                f" {large['mb_per_s']:.1f} MB/s end to end (target >= 100),"
                f" {large['pipeline_mb_per_s']:.1f} MB/s in the pipeline;"
                f" postfix relay {postfix_mb_s:.1f} MB/s"
                f" (gateway {large['mb_per_s'] / postfix_mb_s:.2f}x)"
            )
            print(
                f"  same message without crypto: smtp-source straight to smtp-sink"
                f" {direct_mb_s:.1f} MB/s, gateway pass {large_pass['mb_per_s']:.1f} MB/s"
                f" ({large_pass['mb_per_s'] / postfix_mb_s:.2f}x postfix),"
                f" peak growth {large_pass['growth_ratio']:.2f}x"
            )
            receive, pipeline, relay = large["phases"]
            print(
                f"  time: receiving {receive:.2f}s, pipeline {pipeline:.2f}s, relaying"
                f" {relay:.2f}s (of {large['seconds']:.2f}s)"
            )
            print(
                f"  peak RSS {large['peak_rss_mb']:.0f} MB, {large['rss_before_mb']:.0f} MB"
                f" before the message: growth {large['growth_ratio']:.2f}x the message"
                " (target <= 4x)"
            )
            if large.get("profile"):
                print(f"\n== profile of the gateway (cProfile, SMTP thread), large\n"
                      f"{large['profile']}")  # fmt: skip
        for mode, runs in results.items():
            if runs.profile:
                what = "py-spy, all threads" if args.py_spy else "cProfile, SMTP thread"
                print(f"\n== profile of the gateway ({what}), mode {mode}\n{runs.profile}")
    finally:
        if args.keep:
            print(f"work directory kept: {work}")
        else:
            import shutil

            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
