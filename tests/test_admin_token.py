"""Secure by default: no well-known admin token, a private generated one, refused weak tokens and exposed binds.

The CLI checks run the real ``reelstream gateway`` / ``reelstream up`` processes (they refuse before
starting anything); the route check runs a real gateway process on the session's broker and Redis.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from reelstream.errors import ConfigError
from reelstream.settings import ADMIN_TOKEN_MIN_CHARS, PROJECT_ROOT, Settings
from reelstream.shell import local_services
from tests.live_system import GatewayProcess, Live

#: The old default, spelled so that this file does not contain it.
OLD_DEFAULT = "change" + "-me"
WELL_KNOWN = (OLD_DEFAULT, "change" + "me", "change" + "_me")
STRONG = "Kq3vX9-wT2pLm7Rz"  # 16 characters, 16 distinct


def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reelstream.shell.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def _env(var: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REELSTREAM_ADMIN_TOKEN"}
    return {**env, "REELSTREAM_VAR_DIR": str(var), **extra}


def test_no_well_known_token_anywhere() -> None:
    assert Settings.model_fields["admin_token"].default is None
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, check=True).stdout.split()  # fmt: skip
    offenders = []
    for name in listed:
        path = PROJECT_ROOT / name
        if name.startswith("data/") or not path.is_file():
            continue
        text = path.read_bytes().decode(errors="ignore").lower()
        if any(word in text for word in WELL_KNOWN):
            offenders.append(name)
    assert not offenders, f"a well-known admin token appears in {offenders}"


def test_generated_token_is_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(var_dir=tmp_path / "var")
    assert not settings.admin_token_explicit and not settings.admin_token_path.exists()
    token = settings.admin_secret()
    assert stat.S_IMODE(settings.admin_token_path.stat().st_mode) == 0o600
    assert settings.admin_token_path.read_text().strip() == token and len(token) >= ADMIN_TOKEN_MIN_CHARS
    assert Settings(var_dir=tmp_path / "var").admin_secret() == token  # another process's view: the same token
    assert Settings(var_dir=tmp_path / "other").admin_secret() != token  # one per installation

    settings.admin_token_path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users"):
        Settings(var_dir=tmp_path / "var").admin_secret()
    settings.admin_token_path.chmod(0o600)
    settings.admin_token_path.write_text("\n")
    with pytest.raises(ConfigError, match="delete the file"):
        Settings(var_dir=tmp_path / "var").admin_secret()


@pytest.mark.parametrize(
    ("token", "problem"),
    [("", "is empty"), ("   ", "is empty"), (OLD_DEFAULT, "shorter than"), ("secret", "shorter than"),
     ("ab" * 20, "distinct characters"), (f" {STRONG}", "whitespace")],
)  # fmt: skip
def test_weak_explicit_tokens_are_refused(tmp_path: Path, token: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Settings(var_dir=tmp_path, admin_token=token).admin_secret()
    assert not (tmp_path / "admin_token").exists()  # an explicit token, even a bad one, never falls back


def test_explicit_token_allows_a_wildcard_bind_and_the_generated_one_does_not(tmp_path: Path) -> None:
    assert Settings(var_dir=tmp_path, admin_token=STRONG).admin_secret("0.0.0.0") == STRONG
    for host in ("0.0.0.0", "::", "192.168.1.10", "gateway.example.com"):
        with pytest.raises(ConfigError, match=f"refusing to bind the gateway to {host}"):
            Settings(var_dir=tmp_path).admin_secret(host)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert Settings(var_dir=tmp_path).admin_secret(host)


def test_gateway_and_up_refuse_weak_tokens_and_exposed_binds(tmp_path: Path) -> None:
    var = tmp_path / "var"
    port = str(local_services.free_port())
    cases = [
        (_env(var), ("gateway", "--host", "0.0.0.0", "--port", port), "refusing to bind the gateway to 0.0.0.0"),
        (_env(var, REELSTREAM_GATEWAY_HOST="::"), ("gateway", "--port", port), "refusing to bind the gateway to ::"),
        (_env(var, REELSTREAM_ADMIN_TOKEN=OLD_DEFAULT), ("gateway", "--port", port), "shorter than"),
        (_env(var, REELSTREAM_ADMIN_TOKEN=""), ("gateway", "--port", port), "REELSTREAM_ADMIN_TOKEN is empty"),
        # up refuses before it starts anything (no broker, no Redis, no pid file).
        (_env(var, REELSTREAM_GATEWAY_HOST="0.0.0.0", KAFKA_BOOTSTRAP=f"127.0.0.1:{local_services.free_port()}",
              REDIS_URL=f"redis://127.0.0.1:{local_services.free_port()}/0"),
         ("up", "--no-replay"), "refusing to bind the gateway to 0.0.0.0"),
    ]  # fmt: skip
    for env, args, message in cases:
        result = _cli(env, tmp_path, *args)
        out = " ".join((result.stdout + result.stderr).split())
        assert result.returncode == 2, (args, out)
        assert message in out and "error:" in out, (args, out)
    assert not list(var.glob("run/*.pid"))
    assert not (var / "admin_token").exists()  # refused before a token file was made


def test_admin_routes_need_the_token_the_gateway_generated(live: Live) -> None:
    env = {k: v for k, v in live.env.items() if k != "REELSTREAM_ADMIN_TOKEN"}
    gateway = GatewayProcess(env, live.log_dir)
    try:
        gateway.wait_ready()
        path = live.settings.admin_token_path
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        token = path.read_text().strip()
        assert str(path) in gateway.tail()  # the gateway says where its token lives
        with httpx.Client(base_url=gateway.url, timeout=10) as client:
            for headers in ({}, {"Authorization": "Bearer"},  # no token: httpx will not send a trailing space
                            {"Authorization": f"Bearer {OLD_DEFAULT}"}, {"Authorization": f"Bearer {token}x"},
                            {"Authorization": f"Basic {token}"}):  # fmt: skip
                resp = client.get("/rules", headers=headers)
                assert resp.status_code in {401, 403}, (headers, resp.status_code)
                assert client.put("/rules", json={}, headers=headers).status_code in {401, 403}
            current = client.get("/rules", headers={"Authorization": f"Bearer {token}"})
            assert current.status_code == 200 and "document" in current.json()
    finally:
        gateway.stop()
