"""A local HTTP server on 127.0.0.1 that answers like Databento, FRED and Yahoo.

The real `databento`, `fredapi` and `yfinance` clients talk to it over HTTP, so tests exercise
their requests, their parsing and our handling of answers, failures included. Each route
serves what the test put in `data`; `script(route, [status, ...])` makes the next requests
fail with those statuses first.

Databento's client only speaks HTTPS, so `MarketServer(tls=True)` serves TLS with a
self-signed certificate for 127.0.0.1 (`cert_path`, for REQUESTS_CA_BUNDLE).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import ssl
import tempfile
import threading
from collections import defaultdict, deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import quoteattr


class MarketServer:
    def __init__(self, tls: bool = False):
        # databento: (schema, symbol) -> DBN bytes; fred: series -> [(date, value or None)];
        # yahoo: ticker -> [(date, open, high, low, close, adj_close, volume)]
        self.data: dict[str, dict] = {"databento": {}, "fred": {}, "yahoo": {}}
        self.requests: dict[str, list[dict]] = defaultdict(list)
        self._scripts: dict[str, deque[int]] = defaultdict(deque)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.cert_path: str | None = None
        if tls:
            self.cert_path = _self_signed_certificate()
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self.cert_path)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{'https' if self.cert_path else 'http'}://{host}:{port}"

    def script(self, route: str, statuses: list[int]) -> None:
        self._scripts[route].extend(statuses)

    def next_failure(self, route: str) -> int | None:
        return self._scripts[route].popleft() if self._scripts[route] else None

    def __enter__(self) -> MarketServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler(server: MarketServer):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:  # keep test output quiet
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if parts.path.startswith("/fred/"):
                self._fred(parts.path, query)
            elif parts.path.startswith("/v8/finance/chart/"):
                self._yahoo_chart(parts.path.rsplit("/", 1)[-1], query)
            elif parts.path == "/v1/test/getcrumb":
                self._send(200, b"local-crumb", "text/plain")
            else:  # fc.yahoo.com and other cookie pages
                self._send(404, b"", "text/plain", headers={"Set-Cookie": "A3=local; Path=/"})

        def do_POST(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if parts.path == "/v0/timeseries.get_range":
                self._databento(form)
            else:
                self._send(404, b'{"detail":"not found"}', "application/json; charset=utf-8")

        # --- Databento ------------------------------------------------------------------
        def _databento(self, form: dict) -> None:
            auth = self.headers.get("Authorization", "")
            key = base64.b64decode(auth.removeprefix("Basic ")).decode().split(":")[0] if auth else ""
            server.requests["databento"].append({**form, "key_sent": bool(key)})
            if not key:
                return self._send(401, b'{"detail":"Authentication failed."}', "application/json; charset=utf-8")
            status = server.next_failure("databento")
            if status:
                return self._send(
                    status, json.dumps({"detail": f"scripted {status}"}).encode(), "application/json; charset=utf-8"
                )
            body = server.data["databento"].get((form["schema"], form["symbols"]))
            if body is None:
                return self._send(422, b'{"detail":"symbology_invalid_symbol"}', "application/json; charset=utf-8")
            self._send(200, body, "application/octet-stream")

        # --- FRED ---------------------------------------------------------------------
        def _fred(self, path: str, query: dict) -> None:
            server.requests["fred"].append(
                {k: v for k, v in query.items() if k != "api_key"} | {"key_sent": "api_key" in query}
            )
            status = server.next_failure("fred")
            if status:
                message = "Too Many Requests.  Exceeded Rate Limit" if status == 429 else "Internal Server Error"
                return self._send(
                    status,
                    f'<?xml version="1.0" encoding="utf-8" ?>\n<error code="{status}" message="{message}"/>'.encode(),
                    "text/xml",
                )
            series = server.data["fred"].get(query.get("series_id"))
            if series is None:
                body = '<?xml version="1.0" encoding="utf-8" ?>\n<error code="400" message="Bad Request.  The series does not exist."/>'
                return self._send(400, body.encode(), "text/xml")
            start, end = query.get("observation_start", "0000"), query.get("observation_end", "9999")
            rows = [(d, v) for d, v in series if start <= d <= end]
            body = [
                '<?xml version="1.0" encoding="utf-8" ?>',
                f'<observations realtime_start="2026-11-20" realtime_end="2026-11-20" observation_start="{start}" '
                f'observation_end="{end}" units="lin" output_type="1" file_type="xml" order_by="observation_date" '
                f'sort_order="asc" count="{len(rows)}" offset="0" limit="100000">',
                *(
                    f'  <observation realtime_start="2026-11-20" realtime_end="2026-11-20" date="{d}" '
                    f"value={quoteattr('.' if v is None else str(v))}/>"
                    for d, v in rows
                ),
                "</observations>",
            ]
            self._send(200, "\n".join(body).encode(), "text/xml; charset=UTF-8")

        # --- Yahoo ----------------------------------------------------------------------
        def _yahoo_chart(self, ticker: str, query: dict) -> None:
            from urllib.parse import unquote

            ticker = unquote(ticker)
            server.requests["yahoo"].append({"ticker": ticker, **query})
            status = server.next_failure("yahoo")
            if status:
                body = {
                    "chart": {
                        "result": None,
                        "error": {"code": "Internal Server Error", "description": f"scripted {status}"},
                    }
                }
                return self._send(status, json.dumps(body).encode(), "application/json; charset=utf-8")
            rows = server.data["yahoo"].get(ticker)
            if rows is None:
                body = {
                    "chart": {
                        "result": None,
                        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
                    }
                }
                return self._send(404, json.dumps(body).encode(), "application/json; charset=utf-8")
            self._send(200, json.dumps(_chart(ticker, rows, query)).encode(), "application/json; charset=utf-8")

        def _send(self, status: int, body: bytes, content_type: str, headers: dict | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _chart(ticker: str, rows: list[tuple], query: dict) -> dict:
    """Yahoo's v8 chart answer; daily bars stamped at the session open in the exchange's time."""
    from zoneinfo import ZoneInfo

    tz = (
        "America/New_York"
        if ticker.endswith("=X") or ticker.startswith("^") or ticker.endswith(".NYB")
        else "America/Chicago"
    )
    zone = ZoneInfo(tz)

    def stamp(day: str) -> int:
        return int(dt.datetime.combine(dt.date.fromisoformat(day), dt.time(0), zone).timestamp())

    if "period1" in query:
        first, last = int(query["period1"]), int(query["period2"])
        rows = [r for r in rows if first <= stamp(r[0]) < last]
    else:  # range=1d: the latest bar (yfinance asks this to learn the time zone)
        rows = rows[-1:]
    offset = int(dt.datetime.now(zone).utcoffset().total_seconds())
    return {
        "chart": {
            "result": [
                {
                    "meta": {
                        "currency": "USD",
                        "symbol": ticker,
                        "exchangeName": "LOC",
                        "fullExchangeName": "Local",
                        "instrumentType": "CURRENCY" if ticker.endswith("=X") else "FUTURE",
                        "firstTradeDate": 946857600,
                        "regularMarketTime": stamp(rows[-1][0]) if rows else 0,
                        "hasPrePostMarketData": False,
                        "gmtoffset": offset,
                        "timezone": "EST",
                        "exchangeTimezoneName": tz,
                        "priceHint": 2,
                        "dataGranularity": "1d",
                        "range": "",
                        "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
                    },
                    "timestamp": [stamp(r[0]) for r in rows],
                    "indicators": {
                        "quote": [
                            {
                                "open": [r[1] for r in rows],
                                "high": [r[2] for r in rows],
                                "low": [r[3] for r in rows],
                                "close": [r[4] for r in rows],
                                "volume": [r[6] for r in rows],
                            }
                        ],
                        "adjclose": [{"adjclose": [r[5] for r in rows]}],
                    },
                }
            ],
            "error": None,
        }
    }


def _self_signed_certificate() -> str:
    """A PEM file holding a key and a certificate for 127.0.0.1, valid for a day."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    pem += cert.public_bytes(serialization.Encoding.PEM)
    with tempfile.NamedTemporaryFile("wb", suffix=".pem", delete=False) as out:
        out.write(pem)
    return out.name
