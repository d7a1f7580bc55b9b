"""`python -m simulator`: serve the simulator on SIMULATOR_HOST:SIMULATOR_PORT."""
from __future__ import annotations

import logging
import sys

from werkzeug.serving import run_simple

from . import create_app
from .config import Settings


class QuietPolling(logging.Filter):
    """Drops access-log lines for the handset's once-a-second poll (they carry phone numbers)."""

    NOISY = ("/handset/api/prompt", "/healthz")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(path in message for path in self.NOISY)


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("werkzeug").addFilter(QuietPolling())
    settings = Settings.from_env()
    app = create_app(settings)
    print(f"Daraja simulator on http://{settings.host}:{settings.port} (handset: /handset)", flush=True)
    # Threaded: a push that is held back by a fault must not stall the handset or queries.
    run_simple(settings.host, settings.port, app, threaded=True, use_reloader=False, use_debugger=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
