"""tokenwire.toml: where it is found, what it defines, and the errors for bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokenwire.agent import (
    Agent,
    ConfigError,
    DemoProvider,
    StreamOptions,
    get_agent,
    load_config,
)

SECRET = "sk-test-DO-NOT-LEAK-1234567890"


def write(tmp_path: Path, text: str, name: str = "tokenwire.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TOKENWIRE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)


def test_no_file_gives_the_builtin_defaults() -> None:
    config = load_config()
    assert config.source is None
    assert set(config.agents) == {"assistant"}
    assert {"demo", "openai", "anthropic"} <= set(config.providers)
    assert config.agents["assistant"].provider == "demo"


def test_file_in_the_working_directory_is_used(tmp_path: Path) -> None:
    write(tmp_path, '[agents.poet]\nprovider = "demo"\nsystem = "Rhyme."\n')
    config = load_config()
    assert config.source == Path("tokenwire.toml")
    assert config.agents["poet"].system == "Rhyme."
    assert "assistant" in config.agents  # built-ins stay unless redefined


async def test_path_from_env_var_and_argument(tmp_path: Path, monkeypatch) -> None:
    a = write(tmp_path, '[agents.a]\nprovider = "demo"\n', "a.toml")
    b = write(tmp_path, '[agents.b]\nprovider = "demo"\n', "b.toml")
    monkeypatch.setenv("TOKENWIRE_CONFIG", str(a))
    assert "a" in load_config().agents
    assert "b" in load_config(b).agents  # the argument wins
    agent = await get_agent("b", config=b)
    assert agent.name == "b"


def test_explicitly_named_file_must_exist(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(ConfigError, match=r"config file not found: .*missing\.toml"):
        load_config(tmp_path / "missing.toml")
    monkeypatch.setenv("TOKENWIRE_CONFIG", str(tmp_path / "gone.toml"))
    with pytest.raises(ConfigError, match=r"gone\.toml"):
        load_config()


def test_full_configuration(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_KEY", SECRET)
    path = write(
        tmp_path,
        """
[providers.local]
type = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key_env = "LOCAL_KEY"
headers = { "X-Team" = "docs" }
timeouts = { first_token = 5, idle = 2.5, total = 60 }

[providers.slow]
type = "demo"
time_to_first_token = 0.5
time_per_token = 0.01
seed = 3

[agents.assistant]
provider = "local"
model = "llama3.2"
system = "You are terse."
options = { temperature = 0.2, max_tokens = 50, stop_sequences = ["\\n\\n"] }

[agents.storyteller]
provider = "slow"
""",
    )
    config = load_config(path)
    local = config.providers["local"]
    assert local.type == "openai" and local.headers == {"X-Team": "docs"}
    assert (local.timeouts.first_token, local.timeouts.idle, local.timeouts.total) == (5, 2.5, 60)
    assert local.api_key() == SECRET
    spec = config.agents["assistant"]
    assert spec.options == StreamOptions(temperature=0.2, max_tokens=50, stop_sequences=["\n\n"])
    agent = Agent.from_config(config, "assistant")
    assert agent.model == "llama3.2" and agent.system == "You are terse."
    assert agent.timeouts.idle == 2.5
    story = Agent.from_config(config, "storyteller")
    assert isinstance(story.provider, DemoProvider)
    assert story.provider.time_to_first_token == 0.5 and story.provider.seed == 3
    assert story.model == "demo"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[agents.a]\nprovider = "opnai"\n', r"\[agents.a\]: unknown provider 'opnai' \(defined: "),
        ('[agents.a]\nprovider = "openai"\n', r"model is required for provider 'openai'"),
        ('[agents.a]\nprovider = "demo"\nmodle = "x"\n', r"unknown key\(s\) modle"),
        (
            '[agents.a]\nprovider = "demo"\noptions = { temperature = 5 }\n',
            r"\[agents.a\] options: invalid option temperature=5: must be between 0 and 2",
        ),
        (
            '[agents.a]\nprovider = "demo"\noptions = { top_k = 5 }\n',
            r"unknown option 'top_k'",
        ),
        (
            '[providers.x]\nbase_url = "http://h"\n',
            r"\[providers.x\]: type must be one of .*missing",
        ),
        (
            '[providers.x]\ntype = "bogus"\n',
            r"type must be one of openai, anthropic, openai-responses, gemini, demo, not 'bogus'",
        ),
        (
            '[providers.x]\ntype = "openai"\ntime_per_token = 1\n',
            r"unknown key\(s\) time_per_token",
        ),
        ('[providers.x]\ntype = "demo"\nseed = "one"\n', r"seed must be an integer"),
        ('[providers.x]\ntype = "openai"\nbase_url = 3\n', r"base_url must be a string"),
        (
            '[providers.x]\ntype = "openai"\nheaders = { a = 1 }\n',
            r"headers must be a table of strings",
        ),
        (
            '[providers.x]\ntype = "openai"\ntimeouts = { idle = -1 }\n',
            r"timeouts: idle must be a number of seconds >= 0",
        ),
        ('[providers.x]\ntype = "openai"\ntimeouts = { idel = 1 }\n', r"unknown key\(s\) idel"),
        ("[server]\nport = 1\n", r"unknown top-level table\(s\): server"),
        ("[gateway]\nport = 1\n", r"\[gateway\]: unknown key\(s\) port"),
        ("[gateway]\nmax_request_bytes = 0\n", r"max_request_bytes must be a positive integer"),
        ('[gateway]\ncors_origins = "*"\n', r"cors_origins must be a list of strings"),
        ('[models.x]\nprovider = "nope"\n', r"\[models.x\]: provider must be one of"),
        ('[models.x]\nprovider = "demo"\nflavour = 1\n', r"unknown key\(s\) flavour"),
        ("agents = 3\n", r"\[agents\] must be a table"),
        ("[agents\n", r"invalid TOML"),
    ],
)
def test_bad_configuration_names_the_problem(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value)


async def test_unknown_agent_lists_the_defined_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown agent 'nobody' \(defined: assistant\)"):
        await get_agent("nobody")


async def test_missing_key_names_the_variable(monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    write(Path.cwd(), '[agents.gpt]\nprovider = "openai"\nmodel = "gpt-4o-mini"\n')
    with pytest.raises(
        ConfigError, match=r"provider 'openai': environment variable OPENAI_API_KEY"
    ):
        await get_agent("gpt")
    monkeypatch.setenv("OPENAI_API_KEY", "")
    with pytest.raises(ConfigError, match="OPENAI_API_KEY"):
        await get_agent("gpt")


async def test_keys_never_appear_in_reprs_or_errors(monkeypatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    monkeypatch.setenv("ANTHROPIC_API_KEY", SECRET)
    write(
        Path.cwd(),
        """
[providers.openai]
headers = { Authorization = "Bearer SECRET-HEADER" }

[agents.gpt]
provider = "openai"
model = "gpt-4o-mini"

[agents.claude]
provider = "anthropic"
model = "claude-x"
""",
    )
    config = load_config()
    texts = [repr(config), str(config.providers)]
    for name in ("gpt", "claude"):
        agent = await get_agent(name)
        texts += [repr(agent), str(agent), repr(agent.provider), str(vars(agent))]
        await agent.aclose()
    joined = "\n".join(texts)
    assert SECRET not in joined
    assert "SECRET-HEADER" not in joined
    assert "OPENAI_API_KEY" in joined  # the variable's name is fine to show


def test_model_routes_and_gateway_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokenwire.toml"
    path.write_text(
        '[providers.up]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        'timeouts = { first_token = 5, idle = 2 }\nexpose = ["other-model"]\n'
        '[providers.hidden]\ntype = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n'
        '[models."fast"]\nprovider = "up"\nmodel = "gpt-x"\ntimeouts = { idle = 1 }\n'
        '[gateway]\napi_keys_env = "TW_TEST_KEYS"\ncors_origins = ["http://a.example"]\n'
        "max_request_bytes = 1000\nping = 2.5\n"
    )
    config = load_config(path)
    provider, upstream, timeouts = config.route("fast")
    assert (provider.name, upstream) == ("up", "gpt-x")
    assert (timeouts.first_token, timeouts.idle) == (5.0, 1.0)  # inherited, overridden
    provider, upstream, _ = config.route("up/other-model")
    assert (provider.name, upstream) == ("up", "other-model")
    # PROVIDER/MODEL reaches only what a provider exposes; the error names no file path.
    for name in ("up/third-model", "hidden/gpt-x", "openai/gpt-4o"):
        with pytest.raises(ConfigError, match="unknown model") as caught:
            config.route(name)
        assert str(tmp_path) not in str(caught.value)
    assert config.route("demo")[0].type == "demo"
    with pytest.raises(ConfigError, match="unknown model 'nope'"):
        config.route("nope")
    assert config.gateway.cors_origins == ("http://a.example",)
    assert (config.gateway.max_request_bytes, config.gateway.ping) == (1000, 2.5)
    with pytest.raises(ConfigError, match="TW_TEST_KEYS"):
        config.gateway.api_keys()
    monkeypatch.setenv("TW_TEST_KEYS", "k1, k2,")
    assert config.gateway.api_keys() == {"k1", "k2"}
