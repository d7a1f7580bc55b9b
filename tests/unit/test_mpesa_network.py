"""M-Pesa numbers only: other networks refused by name (libphonenumber's carrier data), a moved number confirmed."""
import pytest

from app.dbsetup import init_db
from app.mpesa.phone import NotMpesaLine, check_mpesa_line, network_of
from tests.support.factories import login, make_user


@pytest.mark.parametrize("phone, network", [("254712345678", "Safaricom"), ("254110123456", "Safaricom"),
                                            ("254733123456", "Airtel"), ("254770123456", "Telkom")])
def test_the_network_comes_from_the_numbering_plan(phone, network):
    assert network_of(phone) == network


def test_other_networks_are_refused_by_name_unless_the_number_moved():
    with pytest.raises(NotMpesaLine) as refused:
        check_mpesa_line("254733123456")
    assert str(refused.value) == "0733 123 456 is an Airtel number; M-Pesa needs a Safaricom line."
    with pytest.raises(NotMpesaLine, match="is a Telkom number"):
        check_mpesa_line("254770123456")
    check_mpesa_line("254733123456", moved=True)
    check_mpesa_line("254712345678")
    check_mpesa_line("254999123456")  # no network known: let through


@pytest.fixture
def shopper(app, db, client):
    init_db(db)
    app.config["WTF_CSRF_ENABLED"] = False
    user = make_user(db, phone="254712345678")
    login(client, user)
    return user


def test_checkout_refuses_an_airtel_number_and_offers_the_moved_choice(db, client, shopper):
    form = {"phone_number": "0733 123 456", "idempotency_key": "form-0001"}
    response = client.post("/checkout/basic", data=form)
    html = response.get_data(as_text=True)
    assert response.status_code == 400 and "0733 123 456 is an Airtel number; M-Pesa needs a Safaricom line." in html
    assert 'name="moved_to_safaricom"' in html
    assert db.payments.count_documents({}) == 0
    # The saved Safaricom number needs no such choice.
    assert 'name="moved_to_safaricom"' not in client.get("/checkout/basic").get_data(as_text=True)

    response = client.post("/checkout/basic", data={**form, "moved_to_safaricom": "y"})
    assert response.status_code == 302
    assert db.payments.find_one({})["phone"] == "254733123456"


def test_registration_refuses_a_telkom_number(app, db):
    init_db(db)
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    data = {"username": "wanjiku", "password": "a long enough password", "confirm": "a long enough password",
            "phone_number": "0770 123 456"}
    response = client.post("/register", data=data)
    assert response.status_code != 302 and "is a Telkom number" in response.get_data(as_text=True)
    assert db.users.count_documents({"username": "wanjiku"}) == 0
    assert client.post("/register", data={**data, "moved_to_safaricom": "y"}).status_code == 302
