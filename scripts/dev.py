"""Helpers for `make dev`: the local database, waiting for it, and first-run set-up.

    python -m scripts.dev db        run SecantusDB on 127.0.0.1:27018 (data in instance/db),
                                    or, when MONGO_URI is set, just say which database is used
    python -m scripts.dev wait      wait until the database answers
    python -m scripts.dev prepare   wait for the database, create indexes, seed plans, print the address
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

from dotenv import load_dotenv

ROOT = Path(__file__).resolve().parent.parent
DEV_DB_PORT = 27018


def _uses_own_database() -> bool:
    """A MONGO_URI other than the development default means: use that database instead."""
    from app.config import SETTINGS
    default = next(s.dev_default for s in SETTINGS if s.name == "MONGO_URI")
    return os.environ.get("MONGO_URI", default) != default


def run_db() -> int:
    if _uses_own_database():
        print("MONGO_URI is set: using that database; no local server started.", flush=True)
        while True:  # honcho stops every process when one exits, so stay up quietly
            time.sleep(3600)
    data = ROOT / "instance" / "db"
    data.mkdir(parents=True, exist_ok=True)
    exe = Path(sys.executable).with_name("secantusd-py")
    os.execv(str(exe), [str(exe), "--host", "127.0.0.1", "--port", str(DEV_DB_PORT),
                        "--storage-path", str(data), "--log-level", "WARNING",
                        # Acknowledged writes survive a crash of the database process, as with MongoDB.
                        "--sync-on-commit"])


def wait_for_db(uri: str, seconds: float = 30) -> None:
    import pymongo
    deadline = time.monotonic() + seconds
    while True:
        try:
            pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000).admin.command("ping")
            return
        except Exception:
            if time.monotonic() > deadline:
                raise SystemExit(f"The database at {uri.split('@')[-1]} did not answer in {seconds:.0f} s.")
            time.sleep(0.3)


def prepare() -> int:
    from app import startup
    from app.plans.service import seed_plans
    settings = startup.configured()
    wait_for_db(settings["MONGO_URI"])
    db = startup.database(settings)
    seeded = seed_plans(db)
    base = settings["PUBLIC_BASE_URL"]
    lines = [
        "",
        "  Lipia is starting.",
        f"  Open the shop:            {base}/",
        f"  Virtual M-Pesa handset:   {settings['MPESA_BASE_URL']}/handset",
        f"  Plans seeded:             {'yes' if seeded else 'already there'}",
        "  Stop everything with Ctrl-C.",
        "",
    ]
    print("\n".join(lines), flush=True)
    return 0


def wait() -> int:
    from app import startup
    wait_for_db(startup.configured()["MONGO_URI"])
    return 0


def with_settings(command) -> int:
    """Run a command that reads the settings: a bad one ends it with one message, status 3."""
    from app import startup  # imported here so `db` starts the server without loading the app
    return startup.entry_point(command)()


def main(argv: list[str]) -> int:
    load_dotenv(ROOT / ".env")
    # These helpers only ever serve `make dev`; an unset LIPIA_ENV would otherwise mean production.
    os.environ.setdefault("LIPIA_ENV", "development")
    command = argv[1] if len(argv) > 1 else ""
    if command == "db":
        return run_db()
    if command == "wait":
        return with_settings(wait)
    if command == "prepare":
        return with_settings(prepare)
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
