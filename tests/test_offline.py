"""The suite's offline guard (tests/conftest.py) catches a reach for the network, and the
model lookups that could download stay local unless a download is allowed."""

import socket

import pytest

from tlroutes.backbones import create_trunk
from tlroutes.errors import ConfigError


def test_the_guard_refuses_a_lookup_and_a_connection(no_network):
    with pytest.raises(OSError):
        socket.getaddrinfo("huggingface.co", 443)
    sock = socket.socket()
    try:
        with pytest.raises(OSError):
            sock.connect(("93.184.216.34", 443))
    finally:
        sock.close()
    assert no_network == ["name lookup of huggingface.co", "connect to 93.184.216.34:443"]
    no_network.clear()  # made on purpose: this test passes; any other test would fail


def test_uncached_models_are_refused_without_reaching_the_hub(tmp_path, monkeypatch):
    """No HF_HUB_OFFLINE set: the lookups themselves must not go out (the guard fails the test
    if they try)."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="download: true"):
        create_trunk("hf:nobody/nothing")
    pytest.importorskip("timm")
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        create_trunk("timm:test_resnet", pretrained=True)
