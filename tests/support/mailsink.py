"""A real SMTP server for tests: aiosmtpd, run as its own process, keeping each message as a file.

Started as `python -m aiosmtpd -n -l 127.0.0.1:PORT -c tests.support.mailsink.FileSink DIR`;
`start_mail_sink()` does that and `received(DIR)` reads back what arrived.
"""
from __future__ import annotations

import email
import os
import sys
import tempfile
import time
import uuid
from email import policy
from email.message import EmailMessage
from pathlib import Path

from .procs import ManagedProcess, free_port, port_open


class FileSink:
    """aiosmtpd handler: every accepted message becomes one .eml file, written atomically."""

    def __init__(self, directory: str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_cli(cls, parser, *args):
        if len(args) != 1:
            parser.error("FileSink takes one argument: the directory to write messages to")
        return cls(args[0])

    async def handle_DATA(self, server, session, envelope):
        name = f"{time.time_ns()}-{uuid.uuid4().hex[:8]}"
        headers = (f"X-Envelope-From: {envelope.mail_from}\r\n"
                   f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n").encode()
        content = envelope.original_content or envelope.content
        if isinstance(content, str):
            content = content.encode()
        partial = self.directory / f".{name}.part"
        partial.write_bytes(headers + content)
        os.replace(partial, self.directory / f"{name}.eml")
        return "250 Message accepted for delivery"


def start_mail_sink() -> tuple[ManagedProcess, int, Path]:
    """The SMTP server as a separate process on a free loopback port; returns (process, port, directory)."""
    port = free_port()
    directory = Path(tempfile.mkdtemp(prefix="lipia-mail-"))
    proc = ManagedProcess("smtp", [sys.executable, "-m", "aiosmtpd", "-n", "-l", f"127.0.0.1:{port}",
                                   "-c", "tests.support.mailsink.FileSink", str(directory)],
                          ready=lambda: port_open(port)).start()
    return proc, port, directory


def received(directory: Path, to: str | None = None) -> list[EmailMessage]:
    """Messages that arrived, oldest first, optionally only those for one address."""
    messages = []
    for path in sorted(Path(directory).glob("*.eml")):
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        if to is None or to in message["X-Envelope-To"]:
            messages.append(message)
    return messages


def wait_for_mail(directory: Path, to: str, count: int = 1, timeout: float = 30) -> list[EmailMessage]:
    deadline = time.monotonic() + timeout
    while True:
        messages = received(directory, to)
        if len(messages) >= count or time.monotonic() > deadline:
            return messages
        time.sleep(0.2)
