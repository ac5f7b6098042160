"""Ctrl-C while a target is provisioned, before any VM: prompt, and said so.

The kernel is a .deb by URL that a loopback server sends slowly, so the run
is interrupted mid-download; nothing here boots.
"""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import results
from harness.accel import ACCEL_ENV
from harness.cache import CACHE_ENV
from harness.settings import KEYRING_ENV, MIRROR_ENV

# An interrupted run ends within this many seconds.
STOP_SECONDS = 5.0


class Trickle(http.server.BaseHTTPRequestHandler):
    """Answers any GET with a large body sent a little at a time."""

    started = threading.Event()

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(1 << 30))
        self.end_headers()
        Trickle.started.set()
        try:
            for _ in range(2000):
                self.wfile.write(b"\0" * 1024)
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            return

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def slow_url() -> Iterator[str]:
    """The URL of a kernel .deb that takes minutes to download."""
    Trickle.started.clear()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/k.deb"
    server.shutdown()
    server.server_close()


def start_inner(tmp_path: Path, url: str, *args: str) -> subprocess.Popen[bytes]:
    """pytest on one `vm` test whose kernel is the .deb at `url`."""
    (tmp_path / "kernels.yaml").write_text(
        f"kernels:\n  - {{name: mine, source: url, arch: [x86_64], url: '{url}', "
        f"sha256: '{'0' * 64}'}}\n"
    )
    (tmp_path / "test_inner.py").write_text(
        textwrap.dedent(
            """
            def test_boots(vm):
                pass
            """
        )
    )
    keyring = tmp_path / "keyring.gpg"
    keyring.write_bytes(b"")
    env = {
        **os.environ, CACHE_ENV: str(tmp_path / "cache"), ACCEL_ENV: "tcg",
        MIRROR_ENV: "http://127.0.0.1:9", KEYRING_ENV: str(keyring),
        "no_proxy": "127.0.0.1",
    }  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "pytest", "test_inner.py", "-p", "no:cacheprovider",
         "--kernels=mine", "--arch=x86_64", f"--catalogue={tmp_path / 'kernels.yaml'}",
         f"--artefacts={tmp_path / 'artefacts'}", f"--rootdir={tmp_path}", *args],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip


def interrupt_mid_download(
    proc: subprocess.Popen[bytes], sig: int
) -> tuple[str, float]:
    """Send `sig` once the download has begun; the output and the seconds it took
    the run to end."""
    if not Trickle.started.wait(60):
        proc.kill()
        pytest.fail(f"the download never began:\n{proc.communicate()[0].decode()}")
    time.sleep(0.3)
    sent = time.monotonic()
    proc.send_signal(sig)
    output, _ = proc.communicate(timeout=60)
    return output.decode(), time.monotonic() - sent


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_while_a_kernel_downloads_says_what_it_stopped(
    tmp_path: Path, slow_url: str, sig: int
) -> None:
    proc = start_inner(tmp_path, slow_url)

    output, seconds = interrupt_mid_download(proc, sig)

    assert proc.returncode == pytest.ExitCode.INTERRUPTED, output[-3000:]
    assert (
        "interrupted: stopped while provisioning mine-x86_64, before its VM "
        "started; no VM to stop\n"
    ) in output, output[-3000:]
    assert seconds < STOP_SECONDS, output[-3000:]
    assert not list((tmp_path / "cache").rglob("k.deb")), "a partial download"
    # No case finished, and the report says the run was cut short.
    report = results.load(tmp_path / "reports" / "matrix.json")
    assert report.incomplete and not report.cells
