"""`python -m simulator`: serve the simulator on SIMULATOR_HOST:SIMULATOR_PORT."""
from __future__ import annotations

import logging
import sys

from werkzeug.serving import WSGIRequestHandler, run_simple

from . import create_app
from .config import Refused, Settings, check_environment


class VersionlessHandler(WSGIRequestHandler):
    """Says what it is in the Server header, not which Werkzeug and Python versions to attack."""

    def version_string(self) -> str:
        return "daraja-simulator"


class QuietPolling(logging.Filter):
    """Drops access-log lines for the handset's once-a-second poll (they carry phone numbers)."""

    NOISY = ("/handset/api/prompt", "/healthz")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(path in message for path in self.NOISY)


def main() -> int:
    try:
        check_environment()
        settings = Settings.from_env()
    except (Refused, ValueError) as exc:
        print(exc, file=sys.stderr)
        return 3
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").addFilter(QuietPolling())
    app = create_app(settings)
    print(f"Daraja simulator on http://{settings.host}:{settings.port} (handset: /handset)", flush=True)
    if settings.handset_open:
        print("warning: SIMULATOR_HANDSET_OPEN=true: anyone who reaches this port can answer any prompt",
              flush=True)
    # Threaded: a push that is held back by a fault must not stall the handset or queries.
    run_simple(settings.host, settings.port, app, threaded=True, use_reloader=False, use_debugger=False,
               request_handler=VersionlessHandler)
    return 0


if __name__ == "__main__":
    sys.exit(main())
