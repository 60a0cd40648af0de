"""Layered TOML configuration: defaults < file < environment < ``--set``, and its errors."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from planes.config import (
    ClockKind,
    Config,
    ConfigError,
    LogFormat,
    MarketSection,
    Mode,
    SyntheticSection,
    default_config_path,
    load_config,
    parse_value,
    read_toml,
    to_tree,
)

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_FILE = ROOT / "configs" / "default.toml"


def load(*sets: str, environ: dict[str, str] | None = None, path: Path | None = None) -> Config:
    """Load with no default file and no process environment unless given."""
    return load_config(path, sets, environ or {}, use_default_file=False)


def error_of(*sets: str, environ: dict[str, str] | None = None, path: Path | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load(*sets, environ=environ, path=path)
    return str(info.value)


def write(tmp_path: Path, text: str, name: str = "bot.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def leaf_paths(tree: dict[str, Any], prefix: str = "") -> set[str]:
    paths: set[str] = set()
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            paths |= leaf_paths(value, f"{prefix}{key}.")
        else:
            paths.add(f"{prefix}{key}")
    return paths


# -- the default file --------------------------------------------------------------------


def test_default_file_equals_the_builtin_defaults() -> None:
    loaded = load_config(DEFAULT_FILE, environ={})

    assert to_tree(loaded) == to_tree(Config())
    assert loaded == Config()


def test_default_file_spells_out_every_key() -> None:
    # Equality above would also hold for an empty file; the file is meant to list every key.
    assert leaf_paths(read_toml(DEFAULT_FILE)) == leaf_paths(to_tree(Config()))


def test_load_config_without_a_path_reads_the_default_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").mkdir()
    write(tmp_path / "configs", "[market.synthetic]\nseed = 99\n", "default.toml")

    assert default_config_path() == Path.cwd() / "configs" / "default.toml"
    assert load_config(environ={}).market.synthetic.seed == 99
    assert load_config(environ={}, use_default_file=False).market.synthetic.seed == 7


def test_default_config_path_falls_back_to_the_source_tree(tmp_path: Path) -> None:
    found = default_config_path(tmp_path)

    assert found is not None
    assert found.resolve() == DEFAULT_FILE


def test_load_config_defaults_are_offline_paper_mode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no configs/ here: the source tree's file is used

    config = load_config(environ={})

    assert config.runtime.mode is Mode.PAPER
    assert config.market.source == "synthetic"
    assert config.runtime.data_dir == "var"
    assert config.runtime.clock is ClockKind.AUTO
    assert config.logging.format is LogFormat.AUTO


# -- layering ----------------------------------------------------------------------------


def test_env_overrides_file_and_set_overrides_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[runtime]\ndata_dir = "from-file"\nmode = "backtest"\n')
    env = {"PLANES__RUNTIME__DATA_DIR": "from-env", "PLANES__LOGGING__LEVEL": "debug"}

    assert load(path=path).runtime.data_dir == "from-file"
    assert load(path=path, environ=env).runtime.data_dir == "from-env"
    config = load("runtime.data_dir=from-set", path=path, environ=env)
    assert config.runtime.data_dir == "from-set"
    # Keys a higher layer does not touch keep the lower layer's value.
    assert config.runtime.mode is Mode.BACKTEST
    assert config.logging.level == "debug"


def test_layers_merge_tables_key_by_key(tmp_path: Path) -> None:
    path = write(tmp_path, "[market.synthetic]\nseed = 1\ntick_ms = 250\n")

    config = load("market.synthetic.seed=2", path=path)

    assert config.market.synthetic.seed == 2
    assert config.market.synthetic.tick_ms == 250
    assert config.market.synthetic.bar_s == SyntheticSection().bar_s


def test_last_set_of_the_same_key_wins() -> None:
    config = load("market.synthetic.seed=1", "market.synthetic.seed=2", "market.synthetic.seed=3")

    assert config.market.synthetic.seed == 3


def test_env_variable_names_map_to_key_paths() -> None:
    config = load(environ={"PLANES__MARKET__SYNTHETIC__SEED": "42"})

    assert config.market.synthetic.seed == 42


def test_env_keys_are_lower_cased() -> None:
    env = {"PLANES__Runtime__DATA_DIR": "state", "PLANES__LOGGING__ENABLED": "false"}

    config = load(environ=env)

    assert config.runtime.data_dir == "state"
    assert config.logging.enabled is False


def test_other_env_variables_are_ignored() -> None:
    env = {"PATH": "/bin", "PLANES_RUNTIME__MODE": "live", "XPLANES__RUNTIME__MODE": "live"}

    assert load(environ=env) == Config()


def test_env_values_are_parsed_like_set_values() -> None:
    env = {
        "PLANES__MARKET__SYMBOLS": '["SOLUSDT"]',
        "PLANES__RUNTIME__DATA_DIR": "state/run1",
        "PLANES__MARKET__SYNTHETIC__SPREAD_BPS": "0.5",
    }

    config = load(environ=env)

    assert config.market.symbols == ("SOLUSDT",)
    assert config.runtime.data_dir == "state/run1"
    assert config.market.synthetic.spread_bps == 0.5


# -- --set parsing -----------------------------------------------------------------------


def test_set_array_becomes_a_tuple() -> None:
    config = load('market.symbols=["BTCUSDT","ETHUSDT"]')

    assert config.market.symbols == ("BTCUSDT", "ETHUSDT")
    assert isinstance(config.market.symbols, tuple)


def test_set_int() -> None:
    seed = load("market.synthetic.seed=3").market.synthetic.seed

    assert seed == 3
    assert type(seed) is int


def test_set_negative_int() -> None:
    assert load("market.synthetic.seed=-5").market.synthetic.seed == -5


def test_set_bool() -> None:
    assert load("logging.enabled=false").logging.enabled is False
    assert load("control.stop_on_end_of_data=true").control.stop_on_end_of_data is True


def test_set_plain_string() -> None:
    assert load("runtime.data_dir=state/run1").runtime.data_dir == "state/run1"


def test_set_quoted_string() -> None:
    assert load('runtime.data_dir="quoted dir"').runtime.data_dir == "quoted dir"


def test_set_float_and_int_for_a_float() -> None:
    assert load("market.synthetic.spread_bps=2.5").market.synthetic.spread_bps == 2.5
    spread = load("market.synthetic.spread_bps=3").market.synthetic.spread_bps
    assert spread == 3.0
    assert type(spread) is float


def test_set_value_with_equals_sign_inside() -> None:
    assert load("runtime.data_dir=a=b").runtime.data_dir == "a=b"
    settings = load('plugins.settings.demo.expr="x=1"').plugins.settings
    assert settings == {"demo": {"expr": "x=1"}}


def test_set_strips_spaces_around_key_and_value() -> None:
    assert load(" market.synthetic.seed = 4 ").market.synthetic.seed == 4


def test_set_enum_value() -> None:
    config = load("runtime.mode=backtest", "logging.format=json")

    assert config.runtime.mode is Mode.BACKTEST
    assert config.logging.format is LogFormat.JSON


def test_set_iso_instant_unquoted() -> None:
    # TOML would read this as a datetime; the config keeps the string the user typed.
    assert parse_value("2024-06-01T00:00:00Z") == "2024-06-01T00:00:00Z"
    assert load("runtime.start=2024-06-01T00:00:00Z").runtime.start == "2024-06-01T00:00:00Z"
    env = {"PLANES__RUNTIME__START": "2024-06-01T12:30:00+02:00"}
    assert load(environ=env).runtime.start == "2024-06-01T12:30:00+02:00"


def test_set_decimal_table_entry() -> None:
    config = load("market.synthetic.start_prices.SOLUSDT=150.5", path=DEFAULT_FILE)
    prices = config.market.synthetic.start_prices

    assert prices["SOLUSDT"] == Decimal("150.5")
    assert prices["BTCUSDT"] == Decimal(60000)


def test_set_without_equals_sign_is_an_error() -> None:
    message = error_of("market.synthetic.seed")

    assert "--set market.synthetic.seed" in message
    assert "key=value" in message


@pytest.mark.parametrize(
    "assignment",
    ["=3", "market..seed=3", ".market=3", "market.=3", "market.sym bols=3", "market/x=3"],
)
def test_malformed_key_path_is_an_error(assignment: str) -> None:
    message = error_of(assignment)

    assert f"--set {assignment}" in message
    assert "is not a key path" in message


def test_malformed_env_key_path_is_an_error() -> None:
    message = error_of(environ={"PLANES__MARKET____SEED": "3"})

    assert "environment variable PLANES__MARKET____SEED" in message
    assert "is not a key path" in message


@pytest.mark.parametrize(
    ("sets", "key"),
    [
        (("market.source.x=1",), "market.source"),
        (("market.synthetic.seed.x=1",), "market.synthetic.seed"),
        (("market.source=a", "market.source.x=1"), "market.source"),
        (("runtime=3",), "runtime"),
    ],
)
def test_setting_a_sub_key_of_a_scalar_is_an_error(sets: tuple[str, ...], key: str) -> None:
    message = error_of(*sets)

    assert f"  {key}: " in message
    assert f"(from --set {sets[-1]})" in message


def test_sub_key_of_a_file_scalar_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[market]\nsource = "synthetic"\n')

    message = error_of("market.source.name=x", path=path)

    assert "market.source: expected a string" in message


# -- errors name the key path, the reason and the origin ---------------------------------


def test_unknown_top_level_key() -> None:
    message = error_of("colour=1")

    assert "colour: unknown key" in message
    for name in (f.name for f in attrs.fields(Config)):
        assert name in message
    assert "(from --set colour=1)" in message


def test_unknown_nested_key() -> None:
    message = error_of("market.synthetic.speed=1")

    assert "market.synthetic.speed: unknown key" in message
    for name in (f.name for f in attrs.fields(SyntheticSection)):
        assert name in message


def test_unknown_key_in_a_section() -> None:
    message = error_of("market.symbol=1")

    assert "market.symbol: unknown key" in message
    assert ", ".join(f.name for f in attrs.fields(MarketSection)) in message


def test_unknown_key_in_a_file_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[runtime]\nmood = 1\n")

    message = error_of(path=path)

    assert "runtime.mood: unknown key" in message
    assert f"(from file {path})" in message


def test_string_for_an_int_is_not_coerced() -> None:
    message = error_of('market.synthetic.seed="3"')

    assert "market.synthetic.seed: expected an integer" in message
    assert "'3'" in message


def test_plain_string_for_an_int() -> None:
    assert "market.synthetic.seed: expected an integer" in error_of("market.synthetic.seed=abc")


def test_int_for_a_bool_is_not_coerced() -> None:
    assert "logging.enabled: expected true or false" in error_of("logging.enabled=1")
    assert "logging.enabled: expected true or false" in error_of("logging.enabled=yes")


def test_bool_for_an_int_is_not_coerced() -> None:
    message = error_of("market.synthetic.seed=true")

    assert "market.synthetic.seed: expected an integer, got the boolean true" in message


def test_float_for_an_int_is_not_coerced() -> None:
    assert "market.synthetic.seed: expected an integer" in error_of("market.synthetic.seed=3.5")


def test_int_for_a_string_is_not_coerced() -> None:
    assert "runtime.data_dir: expected a string" in error_of("runtime.data_dir=3")


def test_bare_string_for_a_list_mentions_a_toml_array() -> None:
    message = error_of("market.symbols=BTCUSDT")

    assert "market.symbols: expected a list" in message
    assert "TOML array" in message


def test_wrong_item_type_in_a_list_names_the_index() -> None:
    message = error_of('market.symbols=["BTCUSDT", 1]')

    assert "market.symbols[1]: expected a string" in message
    assert '(from --set market.symbols=["BTCUSDT", 1])' in message


def test_bad_table_entry_names_the_entry_and_its_origin() -> None:
    message = error_of("market.synthetic.start_prices.BTCUSDT=abc")

    assert "market.synthetic.start_prices[BTCUSDT]: expected a decimal number" in message
    assert "(from --set market.synthetic.start_prices.BTCUSDT=abc)" in message


def test_enum_value_not_allowed_lists_the_choices() -> None:
    message = error_of("runtime.mode=foo")

    assert "runtime.mode: 'foo' is not one of backtest | paper | live" in message
    assert "clock: 'sometimes' is not one of auto | realtime | historical" in error_of(
        "runtime.clock=sometimes"
    )


def test_validator_tick_ms_must_be_positive() -> None:
    message = error_of("market.synthetic.tick_ms=-1")

    assert "market.synthetic.tick_ms: must be > 0" in message
    assert "market.synthetic.tick_ms: must be > 0" in error_of("market.synthetic.tick_ms=0")


def test_validator_non_negative() -> None:
    assert "market.synthetic.max_bars: must be >= 0" in error_of("market.synthetic.max_bars=-1")
    assert "control.drain_timeout_s: must be >= 0" in error_of("control.drain_timeout_s=-0.5")


def test_a_negative_maker_fee_is_a_rebate_but_a_negative_taker_fee_is_refused() -> None:
    config = load("execution.fee_bps_maker=-2.5", "execution.fee_bps_taker=0")
    assert (config.execution.fee_bps_maker, config.execution.fee_bps_taker) == (-2.5, 0.0)
    message = error_of("execution.fee_bps_taker=-1")
    assert "execution.fee_bps_taker: must be >= 0 and below 10000 bps, got -1.0" in message
    assert "only execution.fee_bps_maker may be negative" in message
    for bad in ("-10000", "10000", "-1e9"):
        assert "execution.fee_bps_maker: must be above -10000 and below 10000 bps" in error_of(
            f"execution.fee_bps_maker={bad}"
        )
    assert "execution.fee_bps_taker: must be >= 0" in error_of("execution.fee_bps_taker=10000")


def test_zero_is_fine_where_non_negative() -> None:
    assert load("market.synthetic.max_bars=0").market.synthetic.max_bars == 0


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ('["btcusdt"]', "'btcusdt' is not a symbol like 'BTCUSDT'"),
        ('["BTC-USDT"]', "'BTC-USDT' is not a symbol"),
        ('["B"]', "'B' is not a symbol"),
        ('["BTCUSDT", "ETHUSDT", "BTCUSDT"]', "lists a symbol twice"),
        ("[]", "needs at least one symbol"),
    ],
)
def test_symbols_are_validated(value: str, reason: str) -> None:
    message = error_of(f"market.symbols={value}")

    assert f"market.symbols: {reason}" in message


def test_bad_iso_start() -> None:
    message = error_of("runtime.start=yesterday")

    assert "runtime.start: 'yesterday' is not an ISO-8601 instant" in message


def test_bad_log_level() -> None:
    message = error_of("logging.level=loud")

    assert "logging.level: 'loud' is not one of debug, info, warning, error, critical" in message


def test_log_level_is_case_insensitive() -> None:
    assert load("logging.level=WARNING").logging.level == "WARNING"


def test_several_problems_are_reported_together() -> None:
    with pytest.raises(ConfigError) as info:
        load(
            "runtime.mode=foo",
            "market.synthetic.tick_ms=-1",
            environ={"PLANES__LOGGING__LEVEL": "loud"},
        )
    message = str(info.value)

    assert "3 problems" in message
    assert "runtime.mode: 'foo' is not one of" in message
    assert "(from --set runtime.mode=foo)" in message
    assert "market.synthetic.tick_ms: must be > 0" in message
    assert "(from --set market.synthetic.tick_ms=-1)" in message
    assert "logging.level: 'loud'" in message
    assert "(from environment variable PLANES__LOGGING__LEVEL)" in message


def test_one_problem_is_singular() -> None:
    assert "invalid configuration, 1 problem:" in error_of("runtime.mode=foo")


def test_origin_is_the_env_variable() -> None:
    message = error_of(environ={"PLANES__MARKET__SYNTHETIC__TICK_MS": "0"})

    assert "market.synthetic.tick_ms: must be > 0" in message
    assert "(from environment variable PLANES__MARKET__SYNTHETIC__TICK_MS)" in message


def test_origin_is_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[market.synthetic]\ntick_ms = -1\nseed = 1\n")

    message = error_of("market.synthetic.seed=2", path=path)

    assert "market.synthetic.tick_ms: must be > 0" in message
    assert f"(from file {path})" in message


def test_origin_is_the_layer_that_set_the_bad_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[market]\nsymbols = ["BTCUSDT"]\n')

    message = error_of('market.symbols=["BTCUSDT", 2]', path=path)

    assert "(from --set " in message
    assert str(path) not in message


def test_a_bad_file_value_fixed_by_a_later_layer_is_fine(tmp_path: Path) -> None:
    path = write(tmp_path, '[runtime]\nmode = "foo"\n')

    assert load("runtime.mode=live", path=path).runtime.mode is Mode.LIVE


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"

    message = error_of(path=path)

    assert str(path) in message
    assert "does not exist" in message


def test_invalid_toml_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[runtime\nmode = paper\n")

    message = error_of(path=path)

    assert str(path) in message
    assert "is not valid TOML" in message


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[runtime]\nmode = "pap\xe9r"\n')

    message = error_of(path=path)

    assert str(path) in message
    assert "is not UTF-8 text" in message


def test_a_directory_as_config_file_is_a_config_error(tmp_path: Path) -> None:
    message = error_of(path=tmp_path)

    assert str(tmp_path) in message
    assert "cannot be read" in message


def test_a_file_read_again_is_parsed_again_only_when_its_bytes_changed(tmp_path: Path) -> None:
    path = write(tmp_path, '[runtime]\nmode = "paper"\n[market]\nsymbols = ["BTCUSDT"]\n')
    first = read_toml(path)
    first["runtime"]["mode"] = "live"  # the caller's copy: the next read does not see this
    first["market"]["symbols"].append("ETHUSDT")

    second = read_toml(path)

    assert second == {"runtime": {"mode": "paper"}, "market": {"symbols": ["BTCUSDT"]}}
    assert load(path=path).runtime.mode is Mode.PAPER
    path.write_text('[runtime]\nmode = "live"\n')  # same size or not, new bytes are parsed
    assert read_toml(path) == {"runtime": {"mode": "live"}}
    path.write_text("[runtime\n")
    assert "is not valid TOML" in error_of(path=path)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# -- properties --------------------------------------------------------------------------

symbols_strategy = st.lists(
    st.from_regex(r"[A-Z0-9]{2,10}", fullmatch=True), min_size=1, max_size=6, unique=True
)


@given(seed=st.integers(), symbols=symbols_strategy)
def test_set_values_round_trip(seed: int, symbols: list[str]) -> None:
    config = load(f"market.synthetic.seed={seed}", f"market.symbols={json.dumps(symbols)}")

    assert config.market.synthetic.seed == seed
    assert config.market.symbols == tuple(symbols)
    expected_market = attrs.evolve(
        MarketSection(),
        symbols=tuple(symbols),
        synthetic=attrs.evolve(SyntheticSection(), seed=seed),
    )
    assert config == attrs.evolve(Config(), market=expected_market)


# -- plugin settings ---------------------------------------------------------------------


def test_plugin_settings_accept_arbitrary_tables() -> None:
    config = load(
        "plugins.settings.demo.out=x",
        "plugins.settings.demo.nested.depth=2",
        'plugins.settings.other.items=["a", 1, true]',
    )

    assert config.plugins.settings == {
        "demo": {"out": "x", "nested": {"depth": 2}},
        "other": {"items": ["a", 1, True]},
    }


def test_plugin_settings_from_a_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[plugins.settings.demo]\nout = "file"\nlevel = 3\n')

    config = load("plugins.settings.demo.out=set", path=path)

    assert config.plugins.settings == {"demo": {"out": "set", "level": 3}}


def test_plugin_settings_must_be_a_table() -> None:
    message = error_of("plugins.settings.demo=3")

    assert "plugins.settings[demo]" in message
    assert "(from --set plugins.settings.demo=3)" in message
