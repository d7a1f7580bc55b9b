"""Log-in limits count failures only: a stranger who fills an account's ceiling from many
addresses cannot keep its owner, who knows the password, out."""
import pytest

from tests.unit.test_account_security import login, logout, quick_bcrypt, register  # noqa: F401 (fixture)


@pytest.fixture
def owner(app, client, db):
    app.config.update(LOGIN_RATE_LIMIT="3 per minute", LOGIN_ACCOUNT_RATE_LIMIT="5 per minute",
                      LOGIN_ADDRESS_RATE_LIMIT="1000 per minute")
    assert register(client).status_code == 302
    logout(client)
    return client


def _stranger_fills_the_ceiling(app, addresses=range(3), each=2) -> list[int]:
    """Wrong passwords from several addresses, each staying under its pair limit (3)."""
    return [login(app.test_client(), password="wrong guess", addr=f"203.0.113.{a}").status_code
            for a in addresses for _ in range(each)]


def test_the_owner_gets_in_with_the_right_password_after_a_stranger_filled_the_ceiling(app, owner):
    codes = _stranger_fills_the_ceiling(app)
    assert codes == [400] * 5 + [303]  # the sixth failure is over the account's ceiling of 5
    assert login(owner, addr="198.51.100.7").status_code == 302


def test_over_the_ceiling_a_wrong_password_is_still_refused_and_counted(app, owner):
    _stranger_fills_the_ceiling(app)
    fresh = app.test_client()
    refused = login(fresh, password="another guess", addr="203.0.113.99")
    assert refused.status_code == 303 and int(refused.headers["Retry-After"]) > 0
    assert "Too many attempts. Please wait" in fresh.get(refused.headers["Location"]).text


def test_successful_log_ins_do_not_count_toward_the_pair_limit(app, owner):
    for _ in range(5):  # more than the pair limit of 3
        assert login(owner, addr="198.51.100.7").status_code == 302
        logout(owner)


def test_the_right_password_is_refused_when_its_own_pair_is_over_its_limit(app, owner):
    codes = [login(owner, password="typo typo", addr="198.51.100.7").status_code for _ in range(3)]
    assert codes == [400, 400, 400]
    assert login(owner, addr="198.51.100.7").status_code == 303  # this pair: wait
    assert login(owner, addr="198.51.100.8").status_code == 302  # another address of the owner
