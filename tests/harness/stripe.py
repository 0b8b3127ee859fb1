"""A local Stripe stand-in for the billing tests: Stripe is not reachable from these machines.

It behaves as Stripe documents the calls Tollgate makes (docs.stripe.com/api/billing/meter-event,
/api/billing/meter-event-summary, /idempotency, /api/invoices, /api/invoiceitems):

- `Authorization: Bearer <key>` must carry the configured key (401 otherwise); POST bodies must
  be `application/x-www-form-urlencoded` and are checked field by field: unknown parameters,
  missing required ones, `payload[value]` a whole number, `event_name`/`identifier` at most 100
  characters, `timestamp` within the past 35 days and at most 5 minutes ahead.
- `identifier` is unique: a second event with one answers 400 `invalid_request_error` "An event
  already exists with identifier <id>." with `Stripe-Should-Retry: false`.
- `Idempotency-Key`: the first response of an executed request is stored and replayed
  (`Idempotent-Replayed: true`); the same key with other parameters answers 400
  `idempotency_error`. Requests refused before execution (auth, injected 429/500) are not stored.
- One request at a time per (customer, meter): a second concurrent one answers 429
  `rate_limit` and is counted in `concurrency_violations`.
- `GET /v1/billing/meters` lists the meters; `GET /v1/billing/meters/{id}/event_summaries` sums the accepted events (day windows, UTC);
  meters are made by `add_meter`.
- `POST /v1/invoices`, `/v1/invoiceitems`, `/v1/invoices/{id}/finalize`, `GET /v1/invoices`,
  `GET /v1/invoices/{id}` (lines name their invoice item); `forget_idempotency_keys` plays
  Stripe's 24-hour pruning.
- Fault injection, set by the test: `fail_next(kind, n)` and `storm(kinds, ratio, seed)` with
  kinds `429`, `500` (before applying), `timeout` (applied, answered after `delay_s`) and `drop`
  (applied, then the connection is closed without an answer).
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections import Counter, defaultdict
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, urlsplit

from .serve import Server, serve_in_thread

DAY = 86_400
MAX_AGE_S = 35 * DAY
MAX_AHEAD_S = 300

METER_EVENT_FIELDS = {"event_name", "payload[stripe_customer_id]", "payload[value]", "identifier", "timestamp"}
INVOICE_FIELDS = {"customer", "auto_advance", "collection_method", "days_until_due", "pending_invoice_items_behavior",
                  "description", "currency"}
ITEM_FIELDS = {"customer", "invoice", "amount", "currency", "description", "quantity", "period[start]", "period[end]"}


class StripeError(Exception):
    def __init__(self, status: int, kind: str, message: str, code: str | None = None, should_retry: bool | None = None):
        super().__init__(message)
        self.status, self.kind, self.message, self.code, self.should_retry = status, kind, message, code, should_retry

    def body(self) -> dict:
        error = {"type": self.kind, "message": self.message}
        if self.code:
            error["code"] = self.code
        return {"error": error}


class Dropped(Exception):
    """Close the connection without an answer."""


class StripeStandIn:
    def __init__(self, api_key: str = "sk_test_tollgate", *, delay_s: float = 3.0) -> None:
        self.api_key = api_key
        self.delay_s = delay_s
        self.lock = threading.Lock()
        self.events: list[dict] = []  # accepted meter events
        self.identifiers: Counter[str] = Counter()  # identifier -> times accepted (must stay 1)
        self.idempotency: dict[str, tuple[str, dict, int, dict]] = {}
        self.meters: dict[str, str] = {}  # meter id -> event name
        self.invoices: dict[str, dict] = {}
        self.items: dict[str, dict] = {}
        self.in_flight: Counter[tuple[str, str]] = Counter()
        self.concurrency_violations = 0
        self.requests: Counter[str] = Counter()  # "POST /v1/..." -> count
        self.rejections: list[dict] = []  # every 4xx answered: (path, error)
        self.auth_headers: set[str] = set()
        self.injected: Counter[str] = Counter()  # faults injected, by kind
        self._faults: list[str] = []
        self._storm: tuple[list[str], float, random.Random] | None = None
        self.server: Server | None = None
        self.thread: threading.Thread | None = None

    # -- control -----------------------------------------------------------------------------

    def start(self) -> "StripeStandIn":
        stand_in = self

        class Handler(_Handler):
            stripe = stand_in

        self.server, self.thread = serve_in_thread(("127.0.0.1", 0), Handler)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_meter(self, event_name: str) -> str:
        meter = f"mtr_{event_name}"
        self.meters[meter] = event_name
        return meter

    def fail_next(self, kind: str, n: int = 1) -> None:
        with self.lock:
            self._faults.extend([kind] * n)

    def storm(self, kinds: list[str], ratio: float, seed: int = 7) -> None:
        """From now on, each meter event request fails with one of `kinds` with probability `ratio`."""
        with self.lock:
            self._storm = (kinds, ratio, random.Random(seed))

    def calm(self) -> None:
        with self.lock:
            self._storm = None
            self._faults.clear()

    def totals(self) -> dict[str, int]:
        """Accepted meter event values per customer."""
        out: dict[str, int] = defaultdict(int)
        with self.lock:
            for event in self.events:
                out[event["payload"]["stripe_customer_id"]] += int(event["payload"]["value"])
        return dict(out)

    def inject_event(self, event_name: str, customer: str, value: int, timestamp: int) -> None:
        """An accepted event that Tollgate never sent (a discrepancy for reconciliation)."""
        with self.lock:
            self.events.append({"event_name": event_name, "identifier": f"injected-{uuid.uuid4().hex}",
                                "payload": {"stripe_customer_id": customer, "value": str(value)}, "timestamp": timestamp})

    def lose_event(self, customer: str) -> dict:
        """Forget the latest accepted event of `customer` (a shortfall for reconciliation); its
        identifier stays taken."""
        with self.lock:
            index = max(i for i, e in enumerate(self.events) if e["payload"]["stripe_customer_id"] == customer)
            return self.events.pop(index)

    def _fault(self, path: str) -> str | None:
        if path != "/v1/billing/meter_events":
            return None
        with self.lock:
            if self._faults:
                return self._faults.pop(0)
            if self._storm is not None:
                kinds, ratio, rng = self._storm
                if rng.random() < ratio:
                    return rng.choice(kinds)
        return None

    # -- requests ----------------------------------------------------------------------------

    def handle(self, method: str, path: str, query: dict, headers, body: bytes) -> tuple[int, dict, dict]:
        """(status, body, extra headers); raises Dropped to close without answering."""
        self.requests[f"{method} {path}"] += 1
        auth = headers.get("authorization", "")
        self.auth_headers.add(auth)
        if auth != f"Bearer {self.api_key}":
            raise StripeError(401, "invalid_request_error", "Invalid API Key provided.")
        form: dict[str, str] = {}
        if method == "POST":
            ctype = headers.get("content-type", "")
            if not ctype.startswith("application/x-www-form-urlencoded"):
                raise StripeError(400, "invalid_request_error", f"Invalid content type {ctype!r}: use form encoding.")
            pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
            form = dict(pairs)
            if len(form) != len(pairs):
                raise StripeError(400, "invalid_request_error", "A parameter was given twice.")
        fault = self._fault(path) if method == "POST" else None
        if fault:
            self.injected[fault] += 1
        if fault == "429":
            raise StripeError(429, "invalid_request_error", "Too many requests.", code="rate_limit")
        if fault == "500":
            raise StripeError(500, "api_error", "An unknown error occurred.")
        key = headers.get("idempotency-key")
        if method == "POST" and key:
            with self.lock:
                stored = self.idempotency.get(key)
            if stored is not None:
                route, params, status, answer = stored
                if (route, params) != (path, form):
                    raise StripeError(400, "idempotency_error",
                                      "Keys for idempotent requests can only be used with the same parameters they were first used with.")
                return status, answer, {"Idempotent-Replayed": "true"}
        try:
            status, answer = self._execute(method, path, query, form)
            extra = {}
        except StripeError as e:
            status, answer = e.status, e.body()
            extra = {} if e.should_retry is None else {"Stripe-Should-Retry": str(e.should_retry).lower()}
            if e.status == 429:  # refused before execution: not stored
                raise
        if method == "POST" and key:
            with self.lock:
                self.idempotency[key] = (path, form, status, answer)
        if fault == "timeout":
            time.sleep(self.delay_s)
        if fault == "drop":
            raise Dropped()
        if status >= 400:
            self.rejections.append({"path": path, "error": answer})
        return status, answer, extra

    def _execute(self, method: str, path: str, query: dict, form: dict) -> tuple[int, dict]:
        parts = path.strip("/").split("/")
        if method == "POST" and path == "/v1/billing/meter_events":
            return 200, self._meter_event(form)
        if method == "GET" and path == "/v1/billing/meters":
            data = [{"id": m, "object": "billing.meter", "event_name": n, "status": "active"} for m, n in self.meters.items()]
            return 200, {"object": "list", "data": data, "has_more": False, "url": path}
        if method == "GET" and len(parts) == 5 and parts[:3] == ["v1", "billing", "meters"] and parts[4] == "event_summaries":
            return 200, self._summaries(parts[3], query)
        if method == "POST" and path == "/v1/invoices":
            return 200, self._invoice(form)
        if method == "GET" and path == "/v1/invoices":
            return 200, self._list_invoices(query)
        if method == "GET" and len(parts) == 3 and parts[:2] == ["v1", "invoices"]:
            invoice = self.invoices.get(parts[2])
            if invoice is None:
                raise StripeError(404, "invalid_request_error", f"No such invoice: '{parts[2]}'", code="resource_missing")
            return 200, self._render(invoice)
        if method == "POST" and path == "/v1/invoiceitems":
            return 200, self._item(form)
        if method == "POST" and len(parts) == 4 and parts[:2] == ["v1", "invoices"] and parts[3] == "finalize":
            return 200, self._finalize(parts[2], form)
        raise StripeError(404, "invalid_request_error", f"Unrecognized request URL ({method}: {path}).")

    @staticmethod
    def _check_fields(form: dict, allowed: set[str], required: list[str]) -> None:
        for name in form:
            if name not in allowed and not name.startswith("metadata["):
                raise StripeError(400, "invalid_request_error", f"Received unknown parameter: {name}", code="parameter_unknown")
        for name in required:
            if not form.get(name):
                raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.", code="parameter_missing")

    def _meter_event(self, form: dict) -> dict:
        self._check_fields(form, METER_EVENT_FIELDS, ["event_name", "payload[stripe_customer_id]", "payload[value]"])
        name, customer, value = form["event_name"], form["payload[stripe_customer_id]"], form["payload[value]"]
        if len(name) > 100:
            raise StripeError(400, "invalid_request_error", "event_name must be at most 100 characters.", code="parameter_invalid_string_too_long")
        if not value.isdigit():
            raise StripeError(400, "invalid_request_error", "payload[value] must be a whole number.", code="meter_event_invalid_value")
        identifier = form.get("identifier") or f"auto-{uuid.uuid4().hex}"
        if len(identifier) > 100:
            raise StripeError(400, "invalid_request_error", "identifier must be at most 100 characters.")
        now = int(time.time())
        timestamp = int(form.get("timestamp") or now)
        if timestamp < now - MAX_AGE_S:
            raise StripeError(400, "invalid_request_error", "Timestamp must be within the past 35 calendar days.", code="timestamp_too_far_in_past")
        if timestamp > now + MAX_AHEAD_S:
            raise StripeError(400, "invalid_request_error", "Timestamp must not be more than 5 minutes in the future.", code="timestamp_in_future")
        pair = (customer, name)
        with self.lock:
            if self.in_flight[pair]:
                self.concurrency_violations += 1
                raise StripeError(429, "invalid_request_error", "Only one concurrent request per customer and meter.", code="rate_limit")
            self.in_flight[pair] += 1
        try:
            time.sleep(0.0005)  # a request takes a moment: overlapping requests can be seen
            with self.lock:
                if self.identifiers[identifier]:
                    raise StripeError(400, "invalid_request_error", f"An event already exists with identifier {identifier}.",
                                      should_retry=False)
                self.identifiers[identifier] += 1
                event = {"object": "billing.meter_event", "created": now, "event_name": name, "identifier": identifier,
                         "livemode": False, "payload": {"stripe_customer_id": customer, "value": value}, "timestamp": timestamp}
                self.events.append(event)
                return event
        finally:
            with self.lock:
                self.in_flight[pair] -= 1

    def _summaries(self, meter: str, query: dict) -> dict:
        if meter not in self.meters:
            raise StripeError(404, "invalid_request_error", f"No such billing meter: '{meter}'", code="resource_missing")
        for name in ("customer", "start_time", "end_time"):
            if not query.get(name):
                raise StripeError(400, "invalid_request_error", f"Missing required param: {name}.", code="parameter_missing")
        start, end = int(query["start_time"]), int(query["end_time"])
        if query.get("value_grouping_window") != "day" or start % DAY or end % DAY:
            raise StripeError(400, "invalid_request_error", "Day windows must start and end at 00:00 UTC.")
        sums: dict[int, int] = defaultdict(int)
        with self.lock:
            for e in self.events:
                if e["event_name"] == self.meters[meter] and e["payload"]["stripe_customer_id"] == query["customer"] and start <= e["timestamp"] < end:
                    sums[e["timestamp"] - e["timestamp"] % DAY] += int(e["payload"]["value"])
        data = [{"id": f"mtrusg_{meter}_{day}", "object": "billing.meter_event_summary", "aggregated_value": float(v),
                 "start_time": day, "end_time": day + DAY, "livemode": False, "meter": meter} for day, v in sorted(sums.items())]
        return {"object": "list", "data": data, "has_more": False, "url": f"/v1/billing/meters/{meter}/event_summaries"}

    def _invoice(self, form: dict) -> dict:
        self._check_fields(form, INVOICE_FIELDS, ["customer"])
        invoice = {"id": f"in_{uuid.uuid4().hex[:24]}", "object": "invoice", "customer": form["customer"], "status": "draft",
                   "auto_advance": form.get("auto_advance") == "true", "lines": [],
                   "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}, "created": int(time.time())}
        with self.lock:
            self.invoices[invoice["id"]] = invoice
        return self._render(invoice)

    def _render(self, invoice: dict) -> dict:
        """The invoice as the API shows it: `lines` a list of line items naming their invoice item."""
        with self.lock:
            lines = [{"id": f"il_{item_id[3:]}", "object": "line_item", "invoice_item": item_id,
                      "amount": self.items[item_id]["amount"], "metadata": self.items[item_id]["metadata"]}
                     for item_id in invoice["lines"]]
            return invoice | {"lines": {"object": "list", "data": lines, "has_more": False}}

    def _list_invoices(self, query: dict) -> dict:
        with self.lock:
            found = [i for i in self.invoices.values() if not query.get("customer") or i["customer"] == query["customer"]]
        return {"object": "list", "data": [self._render(i) for i in found], "has_more": False}

    def forget_idempotency_keys(self) -> None:
        """As Stripe does after 24 hours: every stored idempotent answer pruned."""
        with self.lock:
            self.idempotency.clear()

    def _item(self, form: dict) -> dict:
        self._check_fields(form, ITEM_FIELDS, ["customer"])
        invoice = self.invoices.get(form.get("invoice", ""))
        if invoice is None or invoice["status"] != "draft":
            raise StripeError(400, "invalid_request_error", "The invoice must exist and be a draft.")
        if not form.get("amount", "").lstrip("-").isdigit() or not form.get("currency"):
            raise StripeError(400, "invalid_request_error", "amount (whole number) and currency are required.")
        item = {"id": f"ii_{uuid.uuid4().hex[:24]}", "object": "invoiceitem", "customer": form["customer"], "invoice": invoice["id"],
                "amount": int(form["amount"]), "currency": form["currency"], "description": form.get("description"),
                "metadata": {k[9:-1]: v for k, v in form.items() if k.startswith("metadata[")}}
        with self.lock:
            self.items[item["id"]] = item
            invoice["lines"].append(item["id"])
        return item

    def _finalize(self, invoice_id: str, form: dict) -> dict:
        self._check_fields(form, {"auto_advance"}, [])
        invoice = self.invoices.get(invoice_id)
        if invoice is None:
            raise StripeError(404, "invalid_request_error", f"No such invoice: '{invoice_id}'", code="resource_missing")
        if invoice["status"] != "draft":
            raise StripeError(400, "invalid_request_error", "This invoice is already finalized.", code="invoice_not_editable")
        invoice["status"] = "open"
        return self._render(invoice)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without TCP_NODELAY the body waits for the client's
    # delayed ACK (40 ms a response).
    disable_nagle_algorithm = True
    stripe: StripeStandIn

    def log_message(self, *args) -> None:  # quiet
        pass

    def _serve(self, method: str) -> None:
        split = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        query = dict(parse_qsl(split.query, keep_blank_values=True))
        try:
            status, answer, extra = self.stripe.handle(method, split.path, query, self.headers, body)
        except Dropped:
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        except StripeError as e:
            status, answer = e.status, e.body()
            extra = {} if e.should_retry is None else {"Stripe-Should-Retry": str(e.should_retry).lower()}
            if e.status == 429:
                extra["Retry-After"] = "0"
            if e.status < 500:
                self.stripe.rejections.append({"path": split.path, "error": answer})
        data = json.dumps(answer).encode()
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:14]}")
            for name, value in extra.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (an injected timeout)

    def do_POST(self) -> None:
        self._serve("POST")

    def do_GET(self) -> None:
        self._serve("GET")
