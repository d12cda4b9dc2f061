"""Client addresses behind a reverse proxy: forwarded headers count only from the proxy."""
from __future__ import annotations

import runpy

import pytest
from werkzeug.test import Client as WerkzeugClient
from werkzeug.wrappers import Request

from milo_portal import create_app
from milo_portal.config import ROOT, Config, ConfigError, TestConfig
from milo_portal.extensions import db
from milo_portal.models import LoginAttempt
from milo_portal.proxy import TrustedProxyFix
from tests.conftest import Client


@pytest.fixture()
def proxied_app(database_url, app, monkeypatch):
    """The app as deployed behind one proxy at 10.9.0.2, on the test database."""
    monkeypatch.setenv("MILO_TRUSTED_PROXIES", "1")
    monkeypatch.setenv("MILO_TRUSTED_PROXY_ADDRESSES", "10.9.0.2")
    proxied = create_app(TestConfig, database_url=database_url)
    proxied.test_client_class = Client
    yield proxied
    with proxied.app_context():
        db.engine.dispose()


def _wrong_login(client, peer: str, forwarded_for: str):
    return client.post("/login", {"email": "rita@example.com", "password": "not-the-password"},
                       environ_base={"REMOTE_ADDR": peer}, headers={"X-Forwarded-For": forwarded_for})


def test_a_forged_forwarded_for_from_a_direct_client_does_not_change_its_address(proxied_app, user):
    """Defect: with MILO_TRUSTED_PROXIES=1 anyone reaching the app directly picked their own
    address with X-Forwarded-For, and so escaped the per-address throttle."""
    client = proxied_app.test_client()
    statuses = [_wrong_login(client, "203.0.113.7", f"198.51.100.{i}").status_code for i in range(1, 5)]
    addresses = {a for (a,) in db.session.query(LoginAttempt.address)}
    assert addresses == {"203.0.113.7"}
    assert statuses == [200, 200, 200, 429]


def test_the_proxy_s_forwarded_for_is_the_client_address(proxied_app, user):
    client = proxied_app.test_client()
    _wrong_login(client, "10.9.0.2", "198.51.100.4")
    assert [a for (a,) in db.session.query(LoginAttempt.address)] == ["198.51.100.4"]


def test_the_scheme_and_address_come_from_the_proxy_only(proxied_app):
    seen = []

    def recorder(environ, start_response):
        request = Request(environ)
        seen.append((request.scheme, request.remote_addr))
        start_response("204 No Content", [])
        return []

    client = WerkzeugClient(TrustedProxyFix(recorder, 1, proxied_app.config["MILO_TRUSTED_PROXY_ADDRESSES"]))
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}
    client.get("/", environ_base={"REMOTE_ADDR": "10.9.0.2"}, headers=forwarded)
    client.get("/", environ_base={"REMOTE_ADDR": "203.0.113.7"}, headers=forwarded)
    assert seen == [("https", "198.51.100.4"), ("http", "203.0.113.7")]


def test_without_trusted_proxies_forwarded_headers_are_ignored_even_from_loopback(app, client, user):
    client.post("/login", {"email": "rita@example.com", "password": "not-the-password"},
                headers={"X-Forwarded-For": "198.51.100.4"})
    assert [a for (a,) in db.session.query(LoginAttempt.address)] == ["127.0.0.1"]


def test_trusted_proxy_addresses_accept_networks_and_refuse_nonsense(monkeypatch):
    monkeypatch.setenv("MILO_TRUSTED_PROXY_ADDRESSES", "10.9.0.0/24, fd00::1")
    assert [str(n) for n in Config().MILO_TRUSTED_PROXY_ADDRESSES] == ["10.9.0.0/24", "fd00::1/128"]
    monkeypatch.setenv("MILO_TRUSTED_PROXY_ADDRESSES", "10.9.0.2,proxy.internal")
    with pytest.raises(ConfigError, match="MILO_TRUSTED_PROXY_ADDRESSES"):
        Config()


@pytest.mark.parametrize("peer, trusted", [("10.9.0.77", True), ("::ffff:10.9.0.77", True), ("10.9.1.1", False),
                                           ("", False), ("not-an-address", False)])
def test_only_peers_in_the_trusted_networks_are_proxies(peer, trusted):
    import ipaddress

    fix = TrustedProxyFix(lambda environ, start: [], 1, [ipaddress.ip_network("10.9.0.0/24")])
    assert fix.is_trusted(peer) is trusted


def test_gunicorn_leaves_forwarded_headers_to_the_app():
    """gunicorn must not trust a second, different list of proxies for the scheme."""
    from gunicorn.config import Config as GunicornConfig

    settings = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    config = GunicornConfig()
    config.set("forwarded_allow_ips", settings["forwarded_allow_ips"])
    assert config.forwarded_allow_ips == []
