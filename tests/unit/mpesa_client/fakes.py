"""A fake Daraja for the client's unit tests: documented answers by path, no sockets."""
import json
from datetime import datetime, timezone
from urllib.parse import urlsplit

import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

from app.mpesa.client import DarajaClient
from app.mpesa.settings import DarajaSettings

BASE = "https://daraja.test"
SHORTCODE = "174379"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
KEY = "consumer-key-abc123"
SECRET = "consumer-secret-xyz789"
PHONE = "254708374149"
CALLBACK = "https://lipia.example.com/payments/callback/s3cr3tCallbackToken"
OAUTH = "/oauth/v1/generate"
PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
FIXED_NOW = datetime(2026, 11, 22, 11, 30, 5, tzinfo=timezone.utc)  # 14:30:05 in Nairobi

PUSH_OK = {
    "MerchantRequestID": "29115-34620561-1",
    "CheckoutRequestID": "ws_CO_191220191020363925",
    "ResponseCode": "0",
    "ResponseDescription": "Success. Request accepted for processing",
    "CustomerMessage": "Success. Request accepted for processing",
}
INVALID_TOKEN = {"requestId": "10219-2484793-1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}
PENDING = {"requestId": "ws_CO_191220191020363925", "errorCode": "500.001.1001",
           "errorMessage": "The transaction is being processed"}

# make_client's keyword arguments that go to the client itself; the rest are settings.
CLIENT_OPTIONS = ("session", "on_call", "clock", "now")


class FakeDaraja(BaseAdapter):
    """Answers by path. A route is a list of answers used in order (the last one
    repeats); an answer is (status, json-or-bytes[, headers]), an exception to raise,
    or a callable taking the request."""

    def __init__(self):
        super().__init__()
        self.requests = []
        self.tokens_issued = 0
        self.routes = {OAUTH: [self._token], PUSH: [(200, PUSH_OK)], QUERY: [(200, {})]}

    def _token(self, request):
        self.tokens_issued += 1
        return 200, {"access_token": f"tok{self.tokens_issued:024d}", "expires_in": "3599"}

    def on(self, path, *answers):
        self.routes[path] = list(answers)
        return self

    def calls(self, path):
        return [r for r in self.requests if urlsplit(r.url).path == path]

    def send(self, request, stream=False, timeout=None, verify=True, cert=None, proxies=None):
        request.timeout = timeout
        self.requests.append(request)
        path = urlsplit(request.url).path
        answers = self.routes[path]
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if callable(answer):
            answer = answer(request)
        if isinstance(answer, BaseException):
            raise answer
        status, body, *rest = answer
        response = requests.Response()
        response.status_code = status
        response._content = body if isinstance(body, bytes) else json.dumps(body).encode()
        response.headers = CaseInsensitiveDict(rest[0] if rest else {"Content-Type": "application/json"})
        response.url = request.url
        response.request = request
        response.encoding = "utf-8"
        return response

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def settings(**overrides) -> DarajaSettings:
    return DarajaSettings(**{**dict(base_url=BASE, consumer_key=KEY, consumer_secret=SECRET, shortcode=SHORTCODE,
                                    passkey=PASSKEY), **overrides})


def make_client(fake, **kwargs):
    options = {name: kwargs.pop(name) for name in CLIENT_OPTIONS if name in kwargs}
    session = requests.Session()
    session.mount("https://", fake)
    return DarajaClient(settings(**kwargs), **{"session": session, "now": lambda: FIXED_NOW, **options})


def push(client, **kwargs):
    options = dict(phone="0708374149", amount=100, callback_url=CALLBACK, account_reference="LIPIA123456",
                   description="Basic plan", payment_id="pay-1")
    options.update(kwargs)
    return client.stk_push(**options)


def body_of(request):
    return json.loads(request.body)


def err(code, message, request_id="16813-15496121-1"):
    """Daraja's error body."""
    return {"requestId": request_id, "errorCode": code, "errorMessage": message}
