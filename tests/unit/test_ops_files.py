"""The ops/ files stay consistent with the code: units run real commands, the env file lists every setting."""

from __future__ import annotations

import configparser
from pathlib import Path

from services.settings import Settings

OPS = Path(__file__).resolve().parents[2] / "ops"


def test_env_example_lists_every_setting_and_no_secret_values() -> None:
    lines = [ln for ln in (OPS / "zlh.env.example").read_text().splitlines() if ln and not ln.startswith("#")]
    values = dict(ln.split("=", 1) for ln in lines)
    assert set(values) == {f"ZLH_{name.upper()}" for name in Settings.model_fields}
    for secret in ("ZLH_BOOTSTRAP_ADMIN_TOKEN", "ZLH_STRIPE_WEBHOOK_SECRET", "ZLH_DISCORD_WEBHOOK_URL", "ZLH_SMTP_URL",
                   "ZLH_AGENT_SECRET"):
        assert values[secret] == ""


def test_units_are_hardened_and_run_zlh() -> None:
    units = sorted((OPS / "systemd").glob("*.service"))
    assert len(units) == 4
    for unit in units:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.read(unit)
        service = parser["Service"]
        assert service["User"] == "zlh" and service["NoNewPrivileges"] == "yes"
        assert service["ProtectSystem"] == "strict" and service["PrivateTmp"] == "yes"
        assert service["ExecStart"].startswith("/opt/zlh/.venv/bin/zlh ")
