"""Settings: defaults, YAML, environment precedence, and errors that name the key."""

import pytest

from dynamo_pipeline.config import ConfigError, load_settings


def test_defaults_follow_the_design():
    s = load_settings()
    assert s.classes.input_bins_tokens == (512, 2048)
    assert s.classes.output_bins_tokens == (100, 350)
    assert s.slo.for_class("SS") == (0.4, 0.1)
    assert s.window_s == 300
    assert s.classes.names() == ["SS", "SM", "SL", "MS", "MM", "ML", "LS", "LM", "LL"]
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("var/dynamo.db")


def test_yaml_then_env_with_env_winning(tmp_path, monkeypatch):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("window_s: 600\nslo:\n  ttft_p99_s: 0.5\n  per_class: {LL: {ttft_p99_s: 2.0}}\n")
    s = load_settings(cfg)
    assert s.window_s == 600 and s.slo.ttft_p99_s == 0.5 and s.slo.for_class("LL") == (2.0, 0.1)
    monkeypatch.setenv("DYNAMO_WINDOW_S", "900")
    monkeypatch.setenv("DYNAMO_SLO__TBT_P99_S", "0.2")
    s = load_settings(cfg)
    assert s.window_s == 900 and s.slo.tbt_p99_s == 0.2 and s.slo.ttft_p99_s == 0.5


def test_dynamo_config_env_names_the_file(tmp_path, monkeypatch):
    cfg = tmp_path / "x.yaml"
    cfg.write_text("hardware: {gpus_per_server: 4}\n")
    monkeypatch.setenv("DYNAMO_CONFIG", str(cfg))
    assert load_settings().hardware.gpus_per_server == 4


@pytest.mark.parametrize("yaml_text, key, hint", [
    ("window_s: 7\n", "window_s", "greater than or equal to 60"),
    ("window_s: 420\n", "window_s", "divide a day"),
    ("classes: {input_bins_tokens: [2048, 512]}\n", "classes.input_bins_tokens", "increasing"),
    ("slo: {per_class: {XX: {ttft_p99_s: 1}}}\n", "slo.per_class", "unknown class 'XX'"),
    ("hardware: {tp_degrees: [3]}\n", "hardware.tp_degrees", "subset of 1, 2, 4, 8"),
    ("prices: {energy_usd_per_kwh: -1}\n", "prices.energy_usd_per_kwh", "greater than or equal to 0"),
    ("windw_s: 300\n", "windw_s", "unknown setting"),
    ("database_url: mysql://x\n", "database_url", "unsupported scheme"),
])
def test_invalid_values_name_the_key_and_what_is_allowed(tmp_path, yaml_text, key, hint):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text)
    with pytest.raises(ConfigError) as e:
        load_settings(cfg)
    assert key in str(e.value) and hint in str(e.value)


def test_invalid_env_value_is_reported_with_its_key(monkeypatch):
    monkeypatch.setenv("DYNAMO_SLO__TTFT_P99_S", "fast")
    with pytest.raises(ConfigError, match="slo.ttft_p99_s"):
        load_settings()


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "nope.yaml")
    bad = tmp_path / "b.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of settings"):
        load_settings(bad)
