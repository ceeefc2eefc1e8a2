"""Alerts: every alert is recorded in the warehouse (`monitoring.alerts`), logged, and posted to a
webhook and mailed when those are configured. Delivery uses the standard library only.

The webhook URL may carry a token and the SMTP password is a secret: neither is ever written to a
log, a warehouse row or a delivery status.
"""

# No `from __future__ import annotations` here: Dagster reads the nested resource's annotation
# (dg.ResourceDependency) when the class is built.
import datetime as dt
import http.client
import json
import os
import smtplib
import ssl
import time
import urllib.error
import urllib.request
import uuid
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import urlsplit

import dagster as dg

from cbi_assets.warehouse import Warehouse

SEVERITIES = ("info", "warning", "error", "critical")
TABLE = "monitoring.alerts"
TIMEOUT_S = 10
RETRY_DELAY_S = 1.0  # one retry after a server error or a dropped connection, a second later
NOT_CONFIGURED = "not configured"
# Stands in the row for the delivery statuses until they are known; a row left so means the
# process stopped while delivering.
PENDING = "pending"

_CREATE = f"""
create table if not exists {TABLE} (
    alert_id varchar primary key,
    raised_at timestamptz not null,
    kind varchar not null,
    severity varchar not null,
    asset varchar,
    horizon varchar,
    message varchar not null,
    details varchar not null,
    key varchar unique,
    webhook_status varchar,
    mail_status varchar
)
"""


class Alerts(dg.ConfigurableResource):
    """Raise alerts: `send(kind, message, ...)` from an asset (log=context.log) or a sensor."""

    warehouse: dg.ResourceDependency[Warehouse]
    webhook_url: str | None = None  # CBI_ALERT_WEBHOOK (may embed a token: never logged or stored)
    smtp_host: str | None = None  # CBI_ALERT_SMTP_HOST
    smtp_port: int = 25  # CBI_ALERT_SMTP_PORT
    mail_from: str | None = None  # CBI_ALERT_MAIL_FROM
    mail_to: str | None = None  # CBI_ALERT_MAIL_TO (comma-separated)
    smtp_user: str | None = None  # CBI_ALERT_SMTP_USER / CBI_ALERT_SMTP_PASSWORD: STARTTLS and login when both set
    smtp_password: str | None = None

    def send(
        self,
        kind: str,
        message: str,
        *,
        severity: str = "warning",
        asset: str | None = None,
        horizon: str | None = None,
        details: dict | None = None,
        key: str | None = None,
        log=None,
    ) -> bool:
        """Record the alert in monitoring.alerts, write it to `log` (a Dagster logger: context.log), and post/mail it
        when configured. `key` makes it idempotent: an alert whose key is already recorded is not sent again
        (returns False). Delivery failures are recorded in the row (webhook_status / mail_status), never raised."""
        if severity not in SEVERITIES:
            raise ValueError(f"alert {kind!r}: severity {severity!r} is not one of {', '.join(SEVERITIES)}")
        alert_id = str(uuid.uuid4())
        raised_at = dt.datetime.now(dt.UTC)
        # A message about a failed delivery may quote the webhook URL: masked before it goes anywhere.
        message = self._redact(message)
        details_json = self._redact(json.dumps(details or {}, default=str, sort_keys=True))
        # The key is claimed before anything is delivered, so a second sender with the same key (a
        # sensor tick racing an asset) finds it and stays silent; the connection is not held while
        # delivering, so a slow webhook never locks the warehouse.
        if not self._claim(alert_id, raised_at, kind, severity, asset, horizon, message, details_json, key):
            return False
        payload = {
            "kind": kind,
            "severity": severity,
            "asset": asset,
            "horizon": horizon,
            "message": message,
            "details": json.loads(details_json),
            "raised_at": raised_at.isoformat(),
            # Chat webhooks (Slack, Mattermost, Teams connectors) show `text` and reject a body without it.
            "text": f"{_title(kind, severity, asset, horizon)}: {message}",
        }
        webhook_status = self._post(payload)
        mail_status = self._mail(alert_id, payload)
        self.warehouse.execute(
            f"update {TABLE} set webhook_status = ?, mail_status = ? where alert_id = ?",
            [webhook_status, mail_status, alert_id],
        )
        logger = log if log is not None else dg.get_dagster_logger("cbi.alerts")
        # Dagster's log manager and a logging.Logger both have info/warning/error/critical.
        getattr(logger, severity)(
            self._redact(
                f"alert {_title(kind, severity, asset, horizon)}: {message} "
                f"(webhook: {webhook_status}; mail: {mail_status}; alert_id {alert_id})"
            )
        )
        return True

    def _claim(
        self,
        alert_id: str,
        raised_at: dt.datetime,
        kind: str,
        severity: str,
        asset: str | None,
        horizon: str | None,
        message: str,
        details_json: str,
        key: str | None,
    ) -> bool:
        self.warehouse.execute(_CREATE, table=TABLE)
        # A key recorded already, or meanwhile by another sender, inserts nothing: that sender has the alert.
        added = self.warehouse.execute(
            f"insert into {TABLE} values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) on conflict do nothing",
            [alert_id, raised_at, kind, severity, asset, horizon, message, details_json, key, PENDING, PENDING],
            table=TABLE,
        )
        return added == 1

    def _post(self, payload: dict) -> str:
        """POST the alert as JSON; one retry after a server error (5xx, 429) or a failed connection."""
        if not self.webhook_url:
            return NOT_CONFIGURED
        request = urllib.request.Request(
            self.webhook_url,
            data=json.dumps(payload).encode(),
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "cbi-alerts"},
        )
        reason = ""
        for attempt in (1, 2):
            retry = True
            try:
                with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                    response.read()
                return "sent"
            except urllib.error.HTTPError as error:
                reason = f"HTTP {error.code} {error.reason}"
                retry = error.code >= 500 or error.code == 429
            except urllib.error.URLError as error:  # refused, unknown host, TLS
                reason = f"{type(error.reason).__name__}: {error.reason}"
            except (OSError, http.client.HTTPException) as error:  # timed out, dropped mid-answer
                reason = f"{type(error).__name__}: {error}"
            except ValueError as error:  # a malformed URL: a retry cannot help
                reason = f"{type(error).__name__}: {error}"
                retry = False
            if not retry or attempt == 2:
                break
            time.sleep(RETRY_DELAY_S)
        return f"failed: {self._redact(reason)}"

    def _mail(self, alert_id: str, payload: dict) -> str:
        """A plain-text mail to every address of mail_to; STARTTLS and login only when user and password are set."""
        if not self.smtp_host:
            return NOT_CONFIGURED
        recipients = [address.strip() for address in (self.mail_to or "").split(",") if address.strip()]
        if not recipients:
            return "failed: CBI_ALERT_MAIL_TO names no recipient"
        sender = self.mail_from or "cbi@localhost"
        mail = EmailMessage()
        title = _title(payload["kind"], payload["severity"], payload["asset"], payload["horizon"])
        first_line = (payload["message"].splitlines() or [""])[0]
        mail["Subject"] = _one_line(f"[CBI] {title}: {first_line}", 200)
        mail["From"] = sender
        mail["To"] = ", ".join(recipients)
        mail["Date"] = formatdate(usegmt=True)
        mail["Message-ID"] = make_msgid(idstring=alert_id.replace("-", ""), domain="cbi.alerts")
        mail.set_content(_mail_body(alert_id, payload))
        try:
            with smtplib.SMTP(self.smtp_host, self.smtp_port, timeout=TIMEOUT_S) as smtp:
                if self.smtp_user and self.smtp_password:
                    smtp.starttls(context=ssl.create_default_context())
                    smtp.login(self.smtp_user, self.smtp_password)
                smtp.send_message(mail, from_addr=sender, to_addrs=recipients)
            return "sent"
        except smtplib.SMTPResponseException as error:
            text = error.smtp_error
            text = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
            return f"failed: {self._redact(f'SMTP {error.smtp_code} {text}')}"
        except (smtplib.SMTPException, OSError, ValueError) as error:
            return f"failed: {self._redact(f'{type(error).__name__}: {error}')}"

    def _redact(self, text: str) -> str:
        """`text` with the webhook URL (and its path, query and password) and the SMTP password masked."""
        secrets = [self.smtp_password]
        if self.webhook_url:
            parts = urlsplit(self.webhook_url)
            secrets += [self.webhook_url, parts.password]
            path = parts.path + (f"?{parts.query}" if parts.query else "")
            if len(path) > 1:  # the path is where hooks put their token
                secrets += [path, parts.path if len(parts.path) > 1 else None, parts.query]
        for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def _title(kind: str, severity: str, asset: str | None, horizon: str | None) -> str:
    where = " ".join(part for part in (asset, horizon) if part)
    return f"{kind} ({severity}{', ' + where if where else ''})"


def _one_line(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mail_body(alert_id: str, payload: dict) -> str:
    lines = [payload["message"], ""]
    for field in ("kind", "severity", "asset", "horizon", "raised_at"):
        if payload[field] is not None:
            lines.append(f"{field}: {payload[field]}")
    lines.append(f"alert_id: {alert_id}")
    if payload["details"]:
        lines += ["", "details:", json.dumps(payload["details"], indent=2, sort_keys=True)]
    return "\n".join(lines) + "\n"


def alerts_from_env(warehouse: Warehouse) -> Alerts:
    """The alerts resource from the CBI_ALERT_* environment variables. The webhook URL (it may carry a token) and
    the SMTP login are passed as dg.EnvVar: read when a run starts, never kept in config. Unset ones stay off."""
    env = os.environ

    def secret(variable: str) -> str | None:
        return dg.EnvVar(variable) if env.get(variable) else None

    port = env.get("CBI_ALERT_SMTP_PORT") or "25"
    if not port.isdigit():
        raise ValueError(f"CBI_ALERT_SMTP_PORT={port!r} is not a port number: set it to e.g. 25 or 587, or unset it")
    return Alerts(
        warehouse=warehouse,
        webhook_url=secret("CBI_ALERT_WEBHOOK"),
        smtp_host=env.get("CBI_ALERT_SMTP_HOST") or None,
        smtp_port=int(port),
        mail_from=env.get("CBI_ALERT_MAIL_FROM") or None,
        mail_to=env.get("CBI_ALERT_MAIL_TO") or None,
        smtp_user=secret("CBI_ALERT_SMTP_USER"),
        smtp_password=secret("CBI_ALERT_SMTP_PASSWORD"),
    )
