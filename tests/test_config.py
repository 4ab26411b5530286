"""Node configuration: clear errors naming the key, environment overrides, safe defaults;
and a node started from a configuration answers and shuts down gracefully."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp
import pytest

from caseway.keys.identity import Identity
from caseway.node.app import NodeServer, run_node
from caseway.node.config import ConfigError, load_config

from conftest import Keys, StaticPeers

MINIMAL = """
participant = "ph-shelter-manila"
[federation]
listen = "127.0.0.1:0"
[local_api]
listen = "127.0.0.1:0"
[directory]
authority_keys = ["AAAA"]
"""


def write(home: Path, text: str) -> Path:
    (home / "caseway.toml").write_text(text, "utf-8")
    return home


def test_a_minimal_config_gets_safe_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    assert config.participant == "ph-shelter-manila"
    assert config.database == tmp_path / "caseway.db"
    assert config.local_api.is_loopback and not config.tls
    assert config.delivery.backoff_base == 5.0 and config.delivery.backoff_cap == 3600.0


@pytest.mark.parametrize(("text", "env", "key", "words"), [
    (None, {}, None, "no configuration file"),
    ("participant = ", {}, None, "not valid TOML"),
    (MINIMAL.replace('participant = "ph-shelter-manila"', ""), {}, "participant",
     "required"),
    (MINIMAL + "\nlisten_port = 1\n", {}, "directory.listen_port", "unknown setting"),
    (MINIMAL.replace('"127.0.0.1:0"', '"0.0.0.0:8443"', 1), {}, "federation.listen",
     "plain HTTP"),
    (MINIMAL, {"CASEWAY_FEDERATION_LISTEN": "nonsense"}, "federation.listen", "HOST:PORT"),
    (MINIMAL, {"CASEWAY_DELIVERY_BACKOFF_BASE": "soon"}, "delivery.backoff_base", "float"),
    (MINIMAL, {"CASEWAY_PARTICIPANT": "Not An Id"}, "participant", "a-z"),
    (MINIMAL.replace('["AAAA"]', "[]"), {}, "directory.authority_keys", "at least one"),
    (MINIMAL.replace('["AAAA"]', '"AAAA"'), {}, "directory.authority_keys", "list"),
])
def test_bad_configs_name_the_key_and_the_problem(
        tmp_path: Path, text: str | None, env: dict[str, str], key: str | None,
        words: str) -> None:
    if text is not None:
        write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, env=env)
    assert err.value.key == key and words in str(err.value)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL.replace('"127.0.0.1:0"', '"0.0.0.0:80"', 1)),
                         env={"CASEWAY_FEDERATION_ALLOW_PLAIN_HTTP": "true",
                              "CASEWAY_DATABASE": "/var/lib/caseway/node.db",
                              "CASEWAY_DIRECTORY_AUTHORITY_KEYS": "k1, k2"})
    assert config.allow_plain_http and not config.federation.is_loopback
    assert config.database == Path("/var/lib/caseway/node.db")
    assert config.authority_keys == ("k1", "k2")


async def test_run_node_serves_until_stopped(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    peers = StaticPeers()
    keys = Keys(Identity.generate(config.participant), os.urandom(32))
    peers.add(keys.identity)
    stop = asyncio.Event()
    started: asyncio.Future[NodeServer] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(run_node(config, keys, peers, stop=stop,
                                        on_started=started.set_result, configure_logs=False))
    server = await asyncio.wait_for(started, timeout=30)
    assert server.local_api_address is not None
    async with aiohttp.ClientSession() as http:
        async with http.get(server.federation_url + "/healthz") as response:
            assert response.status == 200
        host, port = server.local_api_address
        async with http.get(f"http://{host}:{port}/metrics") as response:
            assert "caseway_messages_in_total" in await response.text()
    stop.set()
    await asyncio.wait_for(task, timeout=30)
    assert (tmp_path / "caseway.db").exists()
