"""What a reply means: every answer Daraja gives maps to one error class, whose flags say what is safe."""
import pytest
import requests
from urllib3.exceptions import ProtocolError

from app.mpesa.client import QueryResult
from app.mpesa.errors import (
    DarajaConfigError,
    DarajaError,
    DarajaNotAccepted,
    DarajaOutcomeUnknown,
    DarajaRejected,
)

from .fakes import OAUTH, PENDING, PUSH, PUSH_OK, QUERY, err, make_client, push


ERROR_CASES = [
    ("bad field", (400, err("400.002.02", "Bad Request - Invalid PhoneNumber")), DarajaRejected),
    ("bad amount", (400, err("400.002.02", "Bad Request - Invalid Amount")), DarajaRejected),
    ("wrong credentials", (500, err("500.001.1001", "[MerchantValidate] - Wrong credentials")), DarajaRejected),
    ("no merchant", (500, err("500.001.1001", "Merchant does not exist")), DarajaRejected),
    ("not found", (404, err("404.001.01", "Resource not found")), DarajaRejected),
    ("method", (405, err("405.001", "Method Not Allowed")), DarajaRejected),
    ("plain 400", (400, b""), DarajaRejected),
    ("forbidden", (403, b"<html>Forbidden</html>"), DarajaRejected),
    ("redirect", (302, b"", {"Location": "https://elsewhere.test/"}), DarajaRejected),
    ("lock subscriber", (500, err("500.001.1001", "Unable to lock subscriber, a transaction is already in "
                                                  "process for the current subscriber")), DarajaNotAccepted),
    ("busy", (500, err("500.003.02", "System is busy")), DarajaNotAccepted),
    ("spike", (500, err("500.003.02", "Spike Arrest Violation")), DarajaNotAccepted),
    ("quota", (500, err("500.003.03", "Quota Violation")), DarajaNotAccepted),
    ("internal", (500, err("500.003.1001", "Internal Server Error")), DarajaNotAccepted),
    ("proxy 429", (429, b"Too Many Requests", {"Retry-After": "7"}), DarajaNotAccepted),
    ("429 json", (429, err("500.003.02", "Spike Arrest Violation")), DarajaNotAccepted),
    ("other daraja 500", (500, err("500.001.1001", "Something new")), DarajaNotAccepted),
    ("500 not json", (500, b"<html>Internal Server Error</html>"), DarajaOutcomeUnknown),
    ("502 gateway", (502, b"Bad Gateway"), DarajaOutcomeUnknown),
    ("504 empty", (504, b""), DarajaOutcomeUnknown),
    ("500 json without code", (500, {"message": "oops"}), DarajaOutcomeUnknown),
    ("200 not json", (200, b"<html>ok</html>"), DarajaOutcomeUnknown),
    ("200 without checkout id", (200, {"ResponseCode": "0"}), DarajaOutcomeUnknown),
    ("200 refused", (200, {**PUSH_OK, "ResponseCode": "1", "ResponseDescription": "Rejected"}), DarajaRejected),
]


@pytest.mark.parametrize("answer, expected", [(a, e) for _, a, e in ERROR_CASES],
                         ids=[name for name, *_ in ERROR_CASES])
def test_push_errors_map_to_the_hierarchy(fake, answer, expected):
    fake.on(PUSH, answer)
    with pytest.raises(expected) as info:
        push(make_client(fake))
    error = info.value
    assert type(error) is expected
    assert error.http_status == answer[0]
    assert error.exchange["endpoint"] == PUSH
    assert error.exchange["http_status"] == answer[0]
    assert len(fake.calls(PUSH)) == 1  # never retried inside the client


def test_flags_per_class():
    assert (DarajaNotAccepted.retryable, DarajaNotAccepted.outcome_unknown) == (True, False)
    assert (DarajaRejected.retryable, DarajaRejected.outcome_unknown) == (False, False)
    assert (DarajaOutcomeUnknown.retryable, DarajaOutcomeUnknown.outcome_unknown) == (False, True)
    assert (DarajaConfigError.retryable, DarajaConfigError.outcome_unknown) == (False, False)
    for cls in (DarajaNotAccepted, DarajaRejected, DarajaOutcomeUnknown, DarajaConfigError):
        assert issubclass(cls, DarajaError)


def test_error_keeps_what_daraja_said(fake):
    fake.on(PUSH, (400, err("400.002.02", "Bad Request - Invalid PhoneNumber", "req-77")))
    with pytest.raises(DarajaRejected) as info:
        push(make_client(fake))
    error = info.value
    assert (error.http_status, error.request_id, error.error_code, error.error_message) == (
        400, "req-77", "400.002.02", "Bad Request - Invalid PhoneNumber")
    assert "400.002.02" in str(error)
    assert error.to_dict()["type"] == "DarajaRejected"


def test_retry_after_is_kept(fake):
    fake.on(PUSH, (429, b"", {"Retry-After": "7"}))
    with pytest.raises(DarajaNotAccepted) as info:
        push(make_client(fake))
    assert info.value.retry_after == 7.0


def test_gateway_fault_shape_is_understood(fake):
    fault = {"fault": {"faultstring": "Invalid Access Token",
                       "detail": {"errorcode": "keymanagement.service.invalid_access_token"}}}
    fake.on(PUSH, (401, fault), (200, PUSH_OK))
    assert push(make_client(fake)).checkout_request_id
    assert len(fake.calls(OAUTH)) == 2


@pytest.mark.parametrize("exc, expected", [
    (requests.exceptions.ConnectTimeout("connect timed out"), DarajaNotAccepted),
    (requests.exceptions.SSLError("handshake failed"), DarajaNotAccepted),
    (requests.exceptions.ReadTimeout("read timed out"), DarajaOutcomeUnknown),
    (requests.exceptions.ConnectionError(ProtocolError("Connection aborted.", ConnectionResetError())),
     DarajaOutcomeUnknown),
    (requests.exceptions.ChunkedEncodingError("broken body"), DarajaOutcomeUnknown),
])
def test_transport_failures_on_push(fake, exc, expected):
    fake.on(PUSH, exc)
    with pytest.raises(expected) as info:
        push(make_client(fake))
    assert info.value.http_status is None
    assert info.value.exchange["http_status"] is None
    assert "error" in info.value.exchange
    assert len(fake.calls(PUSH)) == 1



@pytest.mark.parametrize("path", [OAUTH, PUSH])
@pytest.mark.parametrize("exc", [requests.exceptions.InvalidURL("bad host"), requests.exceptions.MissingSchema("no"),
                                 requests.exceptions.InvalidSchema("gopher")])
def test_an_unusable_base_url_is_a_configuration_error_never_retried(fake, path, exc):
    # Not "surely not accepted" (which the worker retries): the same settings fail the same way.
    fake.on(path, exc)
    with pytest.raises(DarajaConfigError) as info:
        push(make_client(fake))
    assert (info.value.retryable, info.value.outcome_unknown) == (False, False)
    assert info.value.exchange["endpoint"] == path
    assert len(fake.calls(path)) == 1

# --------------------------------------------------------------------------- query results

def test_query_pending(fake):
    fake.on(QUERY, (500, PENDING))
    result = make_client(fake).stk_query("ws_CO_191220191020363925")
    assert isinstance(result, QueryResult)
    assert result.pending is True
    assert result.result_code is None
    assert result.outcome is None
    assert result.checkout_request_id == "ws_CO_191220191020363925"
    assert result.exchange["http_status"] == 500


@pytest.mark.parametrize("code, status", [("1032", "cancelled"), (1032, "cancelled"), ("0", "completed"),
                                          ("1037", "timeout"), ("SFC_IC0003", "failed")])
def test_query_decided(fake, code, status):
    fake.on(QUERY, (200, {
        "ResponseCode": "0",
        "ResponseDescription": "The service request has been accepted successsfully",
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": code,
        "ResultDesc": "Request cancelled by user",
    }))
    result = make_client(fake).stk_query("ws_CO_191220191020363925")
    assert result.pending is False
    assert result.result_code == str(code)
    assert result.result_desc == "Request cancelled by user"
    assert result.merchant_request_id == "29115-34620561-1"
    assert result.outcome.status == status


@pytest.mark.parametrize("answer, expected", [
    ((500, err("500.001.1001", "Unable to lock subscriber, a transaction is already in process")),
     DarajaNotAccepted),
    ((500, err("500.003.02", "Spike Arrest Violation")), DarajaNotAccepted),
    ((500, err("500.003.03", "Quota Violation")), DarajaNotAccepted),
    ((400, err("400.002.02", "Bad Request - Invalid CheckoutRequestID")), DarajaRejected),
    ((500, b"<html>"), DarajaOutcomeUnknown),
    ((200, {"ResponseCode": "0"}), DarajaOutcomeUnknown),
    ((200, {"ResultCode": None}), DarajaOutcomeUnknown),
])
def test_query_errors(fake, answer, expected):
    fake.on(QUERY, answer)
    with pytest.raises(expected):
        make_client(fake).stk_query("ws_CO_1")


def test_being_processed_on_a_push_is_not_pending(fake):
    fake.on(PUSH, (500, PENDING))
    with pytest.raises(DarajaNotAccepted):
        push(make_client(fake))

