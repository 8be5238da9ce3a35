"""``cmcgate ca serve`` as a child process on a fresh software-key CA, with the gateway's CMC
client properties for it (the access certificate made by ``cmcgate ca access-cert``)."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from ca.authority import CertificateAuthority
from ca.init import initialise
from ca.keys import KeyType
from gateway.main import main as cli_main
from tests.ca.test_cmc_server import ACCOUNT, PASSWORD, SILVER, _free_port, _write_props


class Serve:
    """``cmcgate ca serve`` as a child process."""

    def __init__(self, ca_dir: Path, https_port: int, http_port: int, log: Path) -> None:
        self.ca_dir, self.https_port, self.http_port, self.log = ca_dir, https_port, http_port, log
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *extra: str) -> None:
        cmcgate = Path(sys.executable).with_name("cmcgate")
        with self.log.open("a") as log:
            self.proc = subprocess.Popen(
                [str(cmcgate), "ca", "serve", "--dir", str(self.ca_dir),
                 "--listen", f"127.0.0.1:{self.https_port}",
                 "--http-listen", f"127.0.0.1:{self.http_port}", *extra],
                stdout=subprocess.PIPE, stderr=log, text=True,
            )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once both ports listen
        assert line.startswith("cmcgate CA: CMC on"), (line, self.log.read_text()[-2000:])

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close()

    def _close(self) -> None:
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._close()


def served_ca(tmp_path: Path) -> tuple[Serve, Path]:
    """A CA in ``tmp_path/ca`` (not started) and the gateway's properties file for it."""
    directory = tmp_path / "ca"
    http_port = _free_port()
    initialise(
        directory, key_backend="software", key_type=KeyType.EC_P256, progress=lambda _: None,
        base_url=f"http://127.0.0.1:{http_port}", account_id=ACCOUNT,
        email_domains=("example.org",), product_id=SILVER,
    )  # fmt: skip
    (tmp_path / "p12.pass").write_bytes(PASSWORD + b"\n")
    assert cli_main(["ca", "access-cert", "--dir", str(directory), "--account", ACCOUNT,
                     "--out", str(tmp_path / f"{ACCOUNT}.p12"),
                     "--password-file", str(tmp_path / "p12.pass")]) == 0  # fmt: skip
    serve = Serve(directory, _free_port(), http_port, tmp_path / "serve.log")
    with CertificateAuthority.open(directory / "ca.yaml") as ca:
        issuer = ca.issuing_cert.subject.rfc4514_string()
    url = f"/ws/cmc?account={ACCOUNT}&product={SILVER}"
    props = _write_props(tmp_path, "gw", serve.https_port, url, tmp_path / f"{ACCOUNT}.p12", issuer)
    return serve, props
