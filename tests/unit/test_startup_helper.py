"""The start-up every entry point shares: bad settings end with one message and status 3."""
import pytest

from app import startup


def test_a_bad_setting_is_one_message_and_status_3(monkeypatch, capsys):
    monkeypatch.setenv("LIPIA_ENV", "test")
    monkeypatch.setenv("JOB_LEASE_SECONDS", "soon")
    with pytest.raises(startup.CannotStart) as info:
        startup.configured()
    assert info.value.report() == 3
    err = capsys.readouterr().err
    assert "JOB_LEASE_SECONDS" in err and "Traceback" not in err


def test_a_setting_the_parser_let_through_names_who_cannot_start():
    with pytest.raises(startup.CannotStart) as info:
        startup.database({"MONGO_URI": "mongodb://"}, "Lipia worker")
    assert str(info.value).startswith("Lipia worker cannot start; fix the settings: ")


def test_the_database_is_prepared_unless_told_not_to(monkeypatch):
    opened = object()
    monkeypatch.setattr(startup, "database_for", lambda uri: opened)
    prepared = []
    assert startup.database({"MONGO_URI": "mongodb://db.example.com/lipia"}, prepare=prepared.append) is opened
    assert prepared == [opened]
    assert startup.database({"MONGO_URI": "mongodb://db.example.com/lipia"}, prepare=None) is opened
    assert prepared == [opened]


def test_an_entry_point_returns_3_instead_of_a_traceback(capsys):
    @startup.entry_point
    def main() -> int:
        raise startup.CannotStart("fix it")
    assert main() == 3 and capsys.readouterr().err == "fix it\n"


@pytest.mark.parametrize("command", ["wait", "prepare"])
def test_make_dev_helpers_stop_on_bad_settings_with_status_3(monkeypatch, capsys, command):
    from scripts import dev
    monkeypatch.setattr(dev, "load_dotenv", lambda path: None)
    monkeypatch.setenv("LIPIA_ENV", "development")
    monkeypatch.setenv("JOB_LEASE_SECONDS", "soon")
    monkeypatch.setattr(dev, "wait_for_db", lambda *a, **k: pytest.fail("waited despite a bad setting"))
    assert dev.main(["dev", command]) == 3
    assert "JOB_LEASE_SECONDS" in capsys.readouterr().err
