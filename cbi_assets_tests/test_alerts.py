"""The Alerts resource against a real DuckDB file, a local webhook and a local SMTP server on 127.0.0.1."""

# No `from __future__ import annotations`: Dagster reads the asset functions' annotations at definition.
import base64
import datetime as dt
import json
import logging
import os
import socket
import socketserver
import ssl
import threading
from email import message_from_bytes
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import duckdb
import pytest

import resources.alerts as alerts_module
from cbi_assets.settings import Settings
from cbi_assets.warehouse import Warehouse
from cbi_assets_tests.market_server import _self_signed_certificate
from resources import build_resources
from resources.alerts import Alerts, alerts_from_env

TOKEN = "SECRET123"
PASSWORD = "pa55-w0rd-XYZ"
ALERT_VARIABLES = (
    "CBI_ALERT_WEBHOOK",
    "CBI_ALERT_SMTP_HOST",
    "CBI_ALERT_SMTP_PORT",
    "CBI_ALERT_MAIL_FROM",
    "CBI_ALERT_MAIL_TO",
    "CBI_ALERT_SMTP_USER",
    "CBI_ALERT_SMTP_PASSWORD",
)

# Dagster's own setup of a nested resource (the warehouse inside Alerts) calls a deprecated accessor.
pytestmark = pytest.mark.filterwarnings("ignore:InitResourceContext.dagster_run is deprecated:DeprecationWarning")


@pytest.fixture
def certificate():
    path = _self_signed_certificate()
    yield path
    os.unlink(path)


class Webhook:
    """Records each POST (path and JSON body); answers the scripted statuses first, then 200."""

    def __init__(self, statuses: list[int] | None = None):
        self.requests: list[dict] = []
        self.statuses = list(statuses or [])
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.requests.append(
                    {"path": self.path, "content_type": self.headers["Content-Type"], "json": json.loads(body)}
                )
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def url(self, path: str = f"/hook/{TOKEN}") -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{path}"

    def __enter__(self) -> "Webhook":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


class Smtp:
    """A small SMTP responder: records each mail's envelope and message. With `cert_path` it offers
    STARTTLS, and AUTH PLAIN once the session is encrypted (recording the credentials it was given)."""

    def __init__(self, cert_path: str | None = None):
        self.mails: list[dict] = []
        self.logins: list[tuple[str, str, bool]] = []
        tls = None
        if cert_path:
            tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            tls.load_cert_chain(cert_path)
        smtp = self

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, text: str) -> None:
                self.wfile.write(text.encode() + b"\r\n")
                self.wfile.flush()

            def handle(self) -> None:
                encrypted, sender, recipients = False, None, []
                self.reply("220 127.0.0.1 ESMTP ready")
                while line := self.rfile.readline():
                    command = line.decode().rstrip("\r\n")
                    verb = command.split(" ", 1)[0].upper()
                    if verb == "EHLO":
                        lines = ["127.0.0.1"] + (["STARTTLS"] if tls and not encrypted else [])
                        lines += ["AUTH PLAIN"] if encrypted else []
                        for i, text in enumerate(lines):
                            self.reply(f"250{' ' if i == len(lines) - 1 else '-'}{text}")
                    elif verb == "STARTTLS" and tls:
                        self.reply("220 go ahead")
                        self.connection = tls.wrap_socket(self.connection, server_side=True)
                        self.rfile = self.connection.makefile("rb")
                        self.wfile = self.connection.makefile("wb")
                        encrypted = True
                    elif verb == "AUTH" and encrypted:
                        _, user, password = base64.b64decode(command.split()[2]).decode().split("\0")
                        smtp.logins.append((user, password, encrypted))
                        self.reply("235 accepted")
                    elif verb == "MAIL":
                        sender = command.split(":", 1)[1].split()[0].strip("<>")
                        self.reply("250 ok")
                    elif verb == "RCPT":
                        recipients.append(command.split(":", 1)[1].strip().strip("<>"))
                        self.reply("250 ok")
                    elif verb == "DATA":
                        self.reply("354 end with .")
                        data = b""
                        while (chunk := self.rfile.readline()) != b".\r\n":
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        smtp.mails.append(
                            {
                                "from": sender,
                                "to": recipients,
                                "encrypted": encrypted,
                                "message": message_from_bytes(data, policy=default_policy),
                            }
                        )
                        sender, recipients = None, []
                        self.reply("250 queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    else:
                        self.reply("502 not implemented")

        self._server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    def __enter__(self) -> "Smtp":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def alert_rows(database) -> list[dict]:
    with duckdb.connect(str(database)) as conn:
        cursor = conn.execute("select * from monitoring.alerts order by raised_at")
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def run_logs(result: dg.ExecuteInProcessResult, instance: dg.DagsterInstance) -> list[tuple[int, str]]:
    return [(entry.level, entry.user_message) for entry in instance.all_logs(result.run_id)]


def test_send_records_posts_and_mails_once_per_key(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    with Webhook() as hook, Smtp() as smtp:
        alerts = Alerts(
            warehouse=Warehouse(database=str(database)),
            webhook_url=hook.url(),
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            mail_from="cbi@example.org",
            mail_to="desk@example.org, risk@example.org",
        )
        details = {"mape": 7.25, "threshold": 5.0}
        sent = alerts.send(
            "validation_failed",
            "ZL 1w MAPE 7.25% above 5%",
            severity="error",
            asset="ZL",
            horizon="1w",
            details=details,
            key="validation/ZL/1w/2024-06-28",
        )
        again = alerts.send(
            "validation_failed",
            "ZL 1w MAPE 7.25% above 5%",
            severity="error",
            asset="ZL",
            horizon="1w",
            details=details,
            key="validation/ZL/1w/2024-06-28",
        )
        # No key: every call is a new alert.
        alerts.send("note", "a plain note", severity="info")
        alerts.send("note", "a plain note", severity="info")

    assert (sent, again) == (True, False)
    rows = alert_rows(database)
    assert len(rows) == 3
    row = rows[0]
    assert {
        k: row[k] for k in ("kind", "severity", "asset", "horizon", "message", "key", "webhook_status", "mail_status")
    } == {
        "kind": "validation_failed",
        "severity": "error",
        "asset": "ZL",
        "horizon": "1w",
        "message": "ZL 1w MAPE 7.25% above 5%",
        "key": "validation/ZL/1w/2024-06-28",
        "webhook_status": "sent",
        "mail_status": "sent",
    }
    assert json.loads(row["details"]) == details
    assert row["raised_at"].utcoffset().total_seconds() == 0
    assert len(row["alert_id"]) == 36 and len({r["alert_id"] for r in rows}) == 3
    assert rows[1]["key"] is None and json.loads(rows[1]["details"]) == {}

    assert len(hook.requests) == 3  # the repeated key posted nothing
    first = hook.requests[0]
    assert first["path"] == f"/hook/{TOKEN}" and first["content_type"] == "application/json"
    body = first["json"]
    assert {k: body[k] for k in ("kind", "severity", "asset", "horizon", "message", "details")} == {
        "kind": "validation_failed",
        "severity": "error",
        "asset": "ZL",
        "horizon": "1w",
        "message": "ZL 1w MAPE 7.25% above 5%",
        "details": details,
    }
    assert body["raised_at"] == row["raised_at"].astimezone(dt.UTC).isoformat()
    assert "ZL 1w MAPE 7.25% above 5%" in body["text"]

    assert len(smtp.mails) == 3
    mail = smtp.mails[0]
    assert mail["from"] == "cbi@example.org"
    assert mail["to"] == ["desk@example.org", "risk@example.org"]
    assert mail["encrypted"] is False
    message = mail["message"]
    assert message["Subject"] == "[CBI] validation_failed (error, ZL 1w): ZL 1w MAPE 7.25% above 5%"
    assert message["To"] == "desk@example.org, risk@example.org"
    content = message.get_content().replace("\r\n", "\n")
    assert content.startswith("ZL 1w MAPE 7.25% above 5%\n")
    assert "asset: ZL" in content and f"alert_id: {row['alert_id']}" in content and '"mape": 7.25' in content


def test_starttls_and_login_when_user_and_password_are_set(tmp_path, monkeypatch, certificate):
    cert = certificate
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # the client trusts the local server's certificate
    database = tmp_path / "warehouse.duckdb"
    with Smtp(cert_path=cert) as smtp:
        alerts = Alerts(
            warehouse=Warehouse(database=str(database)),
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            mail_to="desk@example.org",
            smtp_user="cbi",
            smtp_password=PASSWORD,
        )
        assert alerts.send("drift", "MES 1min coverage 0.71 below 0.9", asset="MES", horizon="1min")

    assert smtp.logins == [("cbi", PASSWORD, True)]
    assert len(smtp.mails) == 1 and smtp.mails[0]["encrypted"] is True
    assert smtp.mails[0]["to"] == ["desk@example.org"]
    (row,) = alert_rows(database)
    assert (row["webhook_status"], row["mail_status"]) == ("not configured", "sent")
    assert PASSWORD not in json.dumps(row, default=str)


@pytest.mark.integration  # materializes an asset with Dagster (a small one, on no lake)
@pytest.mark.parametrize("webhook", ["answers 500", "closed port"])
def test_failed_delivery_is_recorded_without_secrets(tmp_path, monkeypatch, webhook):
    monkeypatch.setattr(alerts_module, "RETRY_DELAY_S", 0.05)  # the retry is tested, not the length of its pause
    database = tmp_path / "warehouse.duckdb"
    with Webhook(statuses=[500, 500]) as hook, Smtp() as smtp:
        url = hook.url() if webhook == "answers 500" else f"http://127.0.0.1:{closed_port()}/hook/{TOKEN}"
        monkeypatch.setenv("CBI_ALERT_WEBHOOK", url)
        monkeypatch.setenv("CBI_ALERT_SMTP_PASSWORD", PASSWORD)
        # The server offers no STARTTLS, so a login must not be attempted in the clear: the mail fails.
        alerts = Alerts(
            warehouse=Warehouse(database=str(database)),
            webhook_url=dg.EnvVar("CBI_ALERT_WEBHOOK"),
            smtp_host="127.0.0.1",
            smtp_port=smtp.port,
            mail_to="desk@example.org",
            smtp_user="cbi",
            smtp_password=dg.EnvVar("CBI_ALERT_SMTP_PASSWORD"),
        )

        @dg.asset
        def checked(context: dg.AssetExecutionContext, alerts: Alerts) -> None:
            assert alerts.send(
                "upload_failed",
                f"could not post to {url}",
                asset="ZL",
                horizon="1w",
                details={"attempts": 2},
                log=context.log,
            )

        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([checked], resources={"alerts": alerts}, instance=instance)
        assert result.success
        assert smtp.logins == [] and smtp.mails == []

    if webhook == "answers 500":
        assert len(hook.requests) == 2  # one retry
        assert [r["json"]["kind"] for r in hook.requests] == ["upload_failed"] * 2
    (row,) = alert_rows(database)
    expected = (
        "failed: HTTP 500 Internal Server Error" if webhook == "answers 500" else "failed: ConnectionRefusedError"
    )
    assert row["webhook_status"].startswith(expected)
    assert row["mail_status"] == "failed: SMTPNotSupportedError: STARTTLS extension not supported by server."
    assert row["message"] == "could not post to ***"

    logs = run_logs(result, instance)
    alert_lines = [(level, text) for level, text in logs if "upload_failed" in text]
    assert len(alert_lines) == 1 and alert_lines[0][0] == logging.WARNING
    assert row["webhook_status"] in alert_lines[0][1]
    for secret in (TOKEN, PASSWORD, url):
        assert secret not in json.dumps(row, default=str)
        assert not [text for _, text in logs if secret in text]
        assert secret not in repr(row["webhook_status"]) and secret not in repr(row["mail_status"])


@pytest.mark.integration  # materializes an asset with Dagster (a small one, on an empty lake)
def test_build_resources_gives_alerts_that_work_in_a_run(tmp_path, monkeypatch):
    for name in ALERT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with Webhook() as hook:
        monkeypatch.setenv("CBI_ALERT_WEBHOOK", hook.url())
        settings = Settings.from_env(
            {
                "CBI_LAKE": str(tmp_path),
                "CBI_MODELS": str(tmp_path / "Models"),
                "CBI_SOURCE": "sample",
                "CBI_SAMPLE_END": "2024-06-28",
                "CBI_ALERT_WEBHOOK": hook.url(),
            }
        )
        resources = build_resources(settings)
        assert isinstance(resources["alerts"], Alerts)
        assert TOKEN not in repr(resources["alerts"])  # read when the run starts, not kept in config

        @dg.asset
        def watched(context: dg.AssetExecutionContext, alerts: Alerts) -> None:
            assert alerts.send(
                "stale_forecast",
                "ZL 1m forecast is 3 sessions old",
                severity="info",
                asset="ZL",
                horizon="1m",
                key="stale/ZL/1m",
                log=context.log,
            )
            assert not alerts.send("stale_forecast", "again", key="stale/ZL/1m", log=context.log)

        instance = dg.DagsterInstance.ephemeral()
        result = dg.materialize([watched], resources=resources, instance=instance)
        assert result.success

    assert [r["json"]["message"] for r in hook.requests] == ["ZL 1m forecast is 3 sessions old"]
    (row,) = alert_rows(settings.warehouse)
    assert (row["kind"], row["severity"], row["webhook_status"], row["mail_status"]) == (
        "stale_forecast",
        "info",
        "sent",
        "not configured",
    )
    infos = [text for level, text in run_logs(result, instance) if level == logging.INFO and "stale_forecast" in text]
    assert len(infos) == 1 and "webhook: sent; mail: not configured" in infos[0]


def test_a_sensor_raises_an_alert_once_per_key(tmp_path):
    database = tmp_path / "warehouse.duckdb"

    @dg.sensor(target=[])
    def stale_watch(context: dg.SensorEvaluationContext, alerts: Alerts) -> dg.SkipReason:
        raised = alerts.send(
            "stale_forecast",
            "MES 1h forecast is 2 bars old",
            asset="MES",
            horizon="1h",
            key="stale/MES/1h",
            log=context.log,
        )
        return dg.SkipReason(f"alert raised: {raised}")

    with Webhook() as hook:
        alerts = Alerts(warehouse=Warehouse(database=str(database)), webhook_url=hook.url())
        ticks = []
        for _ in range(2):
            with dg.build_sensor_context(resources={"alerts": alerts}) as context:
                ticks.append(stale_watch(context))

    assert [tick.skip_message for tick in ticks] == ["alert raised: True", "alert raised: False"]
    assert len(hook.requests) == 1
    (row,) = alert_rows(database)
    assert (row["key"], row["webhook_status"]) == ("stale/MES/1h", "sent")


def test_alerts_from_env_keeps_secrets_out_of_config(tmp_path, monkeypatch):
    warehouse = Warehouse(database=str(tmp_path / "warehouse.duckdb"))
    for name in ALERT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    off = alerts_from_env(warehouse)
    assert (off.webhook_url, off.smtp_host, off.smtp_password) == (None, None, None)
    env = {
        "CBI_ALERT_WEBHOOK": f"https://hooks.example.org/{TOKEN}",
        "CBI_ALERT_SMTP_HOST": "mail.example.org",
        "CBI_ALERT_SMTP_PORT": "587",
        "CBI_ALERT_MAIL_TO": "desk@example.org",
        "CBI_ALERT_SMTP_USER": "cbi",
        "CBI_ALERT_SMTP_PASSWORD": PASSWORD,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    alerts = alerts_from_env(warehouse)
    assert (alerts.smtp_host, alerts.smtp_port, alerts.mail_to) == ("mail.example.org", 587, "desk@example.org")
    assert TOKEN not in repr(alerts) and PASSWORD not in repr(alerts)
    monkeypatch.setenv("CBI_ALERT_SMTP_PORT", "smtp")
    with pytest.raises(ValueError, match="CBI_ALERT_SMTP_PORT='smtp' is not a port number"):
        alerts_from_env(warehouse)


def test_unknown_severity_is_refused_before_anything_is_recorded(tmp_path):
    database = tmp_path / "warehouse.duckdb"
    alerts = Alerts(warehouse=Warehouse(database=str(database)))
    with pytest.raises(ValueError, match="severity 'fatal' is not one of info, warning, error, critical"):
        alerts.send("x", "y", severity="fatal")
    assert not database.exists()
