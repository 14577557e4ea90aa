"""config.json + OTA_SERVER_* environment, as the seed did it, minus its bugs (design.md §3)."""

import json

import pytest

from otapub.config import ConfigError, load_config


def write(tmp_path, data, raw=None):
    path = tmp_path / "config.json"
    path.write_text(raw if raw is not None else json.dumps(data, indent=2))
    return path


def test_defaults_and_seed_keys(tmp_path):
    config = load_config(write(tmp_path, {"server_port": 8081, "debug_mode": True}), environ={})
    assert config.server_port == 8081 and config.debug_mode is True
    assert config.log_level == "INFO" and config.token_scheme == "djb2-5381"
    assert config.path("fleet_dir") == tmp_path / "fleet"
    assert config.path("site_dir") == tmp_path / "site"


def test_every_key_is_overridable_from_the_environment(tmp_path):
    # The seed ignored OTA_SERVER_ADMIN_API_KEY and OTA_SERVER_FIRMWARE_DIRECTORY: not here.
    env = {"OTA_SERVER_SERVER_PORT": "8080", "OTA_SERVER_ADMIN_API_KEY": "admin-key-1",
           "OTA_SERVER_FIRMWARE_DIRECTORY": "bins", "OTA_SERVER_DEBUG_MODE": "yes",
           "OTA_SERVER_SHARED_SECRET_KEY": "k", "OTA_SERVER_LOG_LEVEL": "debug",
           "OTA_SERVER_BASE_URL": "https://ota.example.com/", "OTA_SERVER_TOKEN_SCHEME": "djb2-0"}
    config = load_config(write(tmp_path, {"server_port": 1}), environ=env)
    assert config.server_port == 8080
    assert config.admin_api_key == "admin-key-1"
    assert config.firmware_directory == "bins"
    assert config.debug_mode is True and config.log_level == "DEBUG"
    assert config.base_url == "https://ota.example.com"
    assert config.token_scheme == "djb2-0"


def test_secrets_are_masked_in_public_view(tmp_path):
    config = load_config(write(tmp_path, {}), environ={"OTA_SERVER_SHARED_SECRET_KEY": "topsecret",
                                                       "OTA_SERVER_ADMIN_API_KEY": "adminsecret"})
    text = json.dumps(config.public())
    assert "topsecret" not in text and "adminsecret" not in text


def test_all_problems_are_reported_together(tmp_path):
    path = write(tmp_path, {"server_port": "eighty", "log_level": "LOUD", "colour": "blue"})
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={"OTA_SERVER_DEBUG_MODE": "maybe", "OTA_SERVER_WHATEVER": "1"})
    message = str(err.value)
    assert f"{path}:2: server_port: expected an integer, found 'eighty'" in message
    assert "log_level: expected one of DEBUG" in message
    assert "colour: unknown setting" in message
    assert "OTA_SERVER_DEBUG_MODE: expected true or false, found 'maybe'" in message
    assert "OTA_SERVER_WHATEVER: unknown setting" in message


@pytest.mark.parametrize("env,needle", [({"OTA_SERVER_SERVER_PORT": "70000"}, "port number"),
                                        ({"OTA_SERVER_BASE_URL": "ftp://x"}, r"http\(s\)"),
                                        ({"OTA_SERVER_TOKEN_SCHEME": "crc32"}, "djb2-0"),
                                        ({"OTA_SERVER_CHECKIN_RETENTION_DAYS": "10000000000"},
                                         "RETENTION_DAYS: expected at most 100000"),
                                        ({"OTA_SERVER_CHECKIN_FOLD_SECONDS": "86401"},
                                         "FOLD_SECONDS: expected at most 86400, found 86401"),
                                        ({"OTA_SERVER_CHECKIN_FOLD_SECONDS": "-5"},
                                         "FOLD_SECONDS: expected a non-negative integer, found -5"),
                                        ({"OTA_SERVER_CHECKIN_FOLD_SECONDS": "1.5"},
                                         "FOLD_SECONDS: expected an integer, found '1.5'")])
def test_bad_values(tmp_path, env, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config(write(tmp_path, {}), environ=env)


def test_checkin_fold_seconds_defaults_to_5_and_is_checked_in_the_file_too(tmp_path):
    assert load_config(write(tmp_path, {}), environ={}).checkin_fold_seconds == 5
    path = write(tmp_path, {"log_level": "INFO", "checkin_fold_seconds": 30})
    assert load_config(path, environ={"OTA_SERVER_CHECKIN_FOLD_SECONDS": "0"}).checkin_fold_seconds == 0
    assert load_config(path, environ={}).checkin_fold_seconds == 30
    path = write(tmp_path, {"log_level": "INFO", "checkin_fold_seconds": 90000})
    with pytest.raises(ConfigError) as err:
        load_config(path, environ={})
    assert str(err.value) == f"{path}:3: checkin_fold_seconds: expected at most 86400, found 90000"


def test_invalid_json_names_line(tmp_path):
    path = write(tmp_path, None, raw='{\n  "server_port": 5000,\n}\n')
    with pytest.raises(ConfigError, match=r"config.json:3:1: invalid JSON"):
        load_config(path, environ={})


def test_missing_config_file_given_explicitly(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.json", environ={})


def test_no_config_file_uses_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = load_config(environ={})
    assert config.source is None and config.root == tmp_path.resolve()


@pytest.mark.parametrize("setting", ["site_dir", "state_dir"])
def test_a_path_setting_naming_a_file_is_one_clean_error(example, setting):
    (example.root / "not-a-folder").write_text("")
    example.set_config(**{setting: "not-a-folder"})
    result = example.cli("build")
    assert result.exit_code == 1
    assert result.output == (f"error: {example.root / 'not-a-folder'}: exists and is not a folder "
                             "(check the paths in the config: site_dir, state_dir, firmware_directory, ...)\n")
