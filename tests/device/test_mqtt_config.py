"""``[mqtt]`` and ``--mqtt``: what is accepted, and one-line errors naming the key (and file:line) for the rest."""

from __future__ import annotations

import socket

import pytest

from edgeclass.device.errors import EdgeclassError
from edgeclass.device.outputs.mqtt import MqttOutput
from edgeclass.device.outputs.mqtt.config import Broker, parse_broker
from edgeclass.device.service.config import ConfigError, DeviceConfig, build, read_config_file, resolve

from .cli_helpers import edgeclass


@pytest.mark.parametrize("url, broker", [
    ("mqtt://broker.local", Broker("broker.local", 1883, False)),
    ("mqtt://10.0.0.2:1884", Broker("10.0.0.2", 1884, False)),
    ("mqtts://broker.local", Broker("broker.local", 8883, True)),
    ("MQTTS://broker.local:8884/", Broker("broker.local", 8884, True)),
    ("mqtt://[::1]:1885", Broker("::1", 1885, False)),
])
def test_broker_urls(url, broker):
    assert parse_broker(url) == broker
    assert parse_broker(broker.url) == broker


def _file(tmp_path, body: str):
    path = tmp_path / "device.toml"
    path.write_text("[model]\nbundle = \"b\"\n\n[mqtt]\n" + body + "\n")
    return path


@pytest.mark.parametrize("body, expected", [
    ('url = "http://broker"', '[mqtt] url = "http://broker" must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], '
                              'got the scheme http://'),
    ('url = "broker.local"', "got the scheme none"),
    ('url = "mqtt://broker:99999"', "the port is not a number from 1 to 65535"),
    ('url = "mqtt://broker/edgeclass"', "a broker URL has no path (the topic prefix is [mqtt] topic)"),
    ('url = "mqtt://"', "(no host name)"),
    ('topic = "edgeclass/#"', '[mqtt] topic = "edgeclass/#" must not contain the MQTT wildcards + or #'),
    ('topic = "/edgeclass"', "must not start with / or $"),
    ('discovery_prefix = "home//assistant"', "have an empty level (//)"),
    ("qos = 3", "[mqtt] qos = 3 must be 0 (at most once), 1 (at least once) or 2 (exactly once)"),
    ("results_per_second = -1", "[mqtt] results_per_second = -1 must be at least 0 messages a second"),
    ('discovery = "yes"', '[mqtt] discovery = "yes" must be true or false'),
    ('password = "x"', "[mqtt] unknown key 'password' (did you mean 'password_file'?"),
])
def test_bad_values_are_refused_with_file_line_and_key(tmp_path, body, expected):
    path = _file(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:5: ") and expected in message and "\n" not in message


def test_a_password_in_the_url_is_refused_without_being_repeated(tmp_path):
    path = _file(tmp_path, 'url = "mqtt://edge:hunter2@broker.local"')
    with pytest.raises(ConfigError) as info:
        read_config_file(path)
    message = str(info.value)
    assert "hunter2" not in message and 'url = "mqtt://***@broker.local"' in message
    assert "must not hold a user name or password: set [mqtt] username, and password_file" in message


def _output(tmp_path, **mqtt) -> MqttOutput | None:
    return MqttOutput.from_config(build(resolve(DeviceConfig().to_dict(), {"mqtt": mqtt})))


def test_off_unless_a_url_is_given_and_the_defaults(tmp_path):
    assert _output(tmp_path) is None
    output = _output(tmp_path, url="mqtt://127.0.0.1:1")
    try:
        host = socket.gethostname().replace("/", "_").replace("+", "_").replace("#", "_")
        assert output.topics.prefix == f"edgeclass/{host}"
        assert output.topics.state == f"edgeclass/{host}/state"
        assert output.link.client_id.startswith(f"edgeclass-{host}-") and output.link.qos == 1
        assert output.result_gap is None and len(output.discovery) == 7
        assert all(topic.startswith(f"homeassistant/") for topic, _ in output.discovery)
    finally:
        output.close()  # never started: returns at once
    quiet = _output(tmp_path, url="mqtt://127.0.0.1:1", discovery=False, topic="garden/cam", results_per_second=4)
    assert quiet.discovery == [] and quiet.topics.availability == "garden/cam/availability" and quiet.result_gap == 0.25
    quiet.close()


def test_settings_that_only_work_together(tmp_path):
    pem = tmp_path / "ca.pem"
    pem.write_text("not a certificate\n")
    empty = tmp_path / "empty.password"
    empty.write_text("\n")
    cases = [
        (dict(url="mqtt://broker", ca_file=str(pem)), "[mqtt] ca_file is set but url mqtt://broker:1883 is not TLS: "
                                                      "use mqtts://broker:1883"),
        (dict(url="mqtts://broker", key_file=str(pem)), "[mqtt] key_file is set without cert_file"),
        (dict(url="mqtt://broker", password_file=str(empty)), "[mqtt] password_file is set without username"),
        (dict(url="mqtt://broker", username="edge", password_file=str(tmp_path / "missing")),
         f"{tmp_path / 'missing'}: [mqtt] password_file cannot be read (No such file or directory)"),
        (dict(url="mqtt://broker", username="edge", password_file=str(empty)),
         f"{empty}: [mqtt] password_file is empty: write the broker's password on its first line"),
        (dict(url="mqtts://broker", ca_file=str(pem)), f"{pem}: [mqtt] ca_file cannot be loaded as PEM certificates"),
        (dict(url="mqtts://broker", cert_file=str(tmp_path / "client.crt")),
         f"{tmp_path / 'client.crt'}: [mqtt] cert_file/key_file cannot be loaded"),
    ]
    for values, expected in cases:
        with pytest.raises(EdgeclassError) as info:
            _output(tmp_path, **values)
        assert expected in str(info.value) and "\n" not in str(info.value), values


def test_the_command_line_refuses_credentials_in_the_url_in_one_line(colour_bundle, colour_video):
    result = edgeclass("run", "--bundle", colour_bundle, "--source", colour_video,
                       "--mqtt", "mqtt://edge:hunter2@localhost")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        'error: command line: [mqtt] url = "mqtt://***@localhost" must not hold a user name or password: '
        "set [mqtt] username, and password_file to a file that holds the password"]
    assert "hunter2" not in result.stdout + result.stderr


def test_a_bad_setting_in_the_file_stops_run_in_one_line(colour_bundle, colour_video, tmp_path):
    config = tmp_path / "device.toml"
    config.write_text(f'[model]\nbundle = "{colour_bundle}"\n[source]\nsource = "{colour_video}"\n'
                      '[mqtt]\nurl = "mqtt://localhost"\nqos = 3\n')
    result = edgeclass("run", "--config", config, "--max-frames", "1")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"error: {config}:7: [mqtt] qos = 3 must be 0 (at most once), 1 (at least once) or 2 (exactly once)")
