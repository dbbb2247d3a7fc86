"""A site file is read strictly (an unknown key or a wrong type is one line naming the key
and the fix), and a session's app settings are bounded, typed and never shadow the
runtime's own keys."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

from stratafl.cli.errors import one_line
from stratafl.cli.operator import app_setting
from stratafl.client.app import ClientContext
from stratafl.client.site import load_site_config
from stratafl.errors import ConfigError
from stratafl.settings import MAX_APP_SETTINGS, SessionConfig


def _site(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_a_site_file_is_read_typed_with_paths_beside_it(tmp_path):
    site = load_site_config(
        _site(
            tmp_path,
            'app = "m:a"\ndata_path = "data"\ntoken_file = "/abs/t.token"\n'
            'combiners = ["edge-1", "edge-2"]\nmetrics_port = 0\n'
            f'allow_apps = ["{"ab" * 32}"]\n'
            '[settings]\ncohort = "a"\nepochs = 5\nscale = 0.5\nstrict = true\n',
        )
    )
    assert site.data_path == tmp_path.resolve() / "data"
    assert site.token_file == Path("/abs/t.token")
    assert site.combiners == ("edge-1", "edge-2") and site.metrics_port == 0
    assert site.allow_apps == ("ab" * 32,)
    assert site.settings == {"cohort": "a", "epochs": 5, "scale": 0.5, "strict": True}
    assert [type(v) for v in site.settings.values()] == [str, int, float, bool]


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ('colour = "blue"\n', "unknown key 'colour'; the keys are allow_apps, app, ca_bundle"),
        ('metrics_port = "9100"\n', "metrics_port = '9100' is not valid"),
        (
            'combiners = "edge-1"\n',
            'write a list of quoted combiner ids, e.g. combiners = ["edge-1"]',
        ),
        ('log_format = "xml"\n', 'write "text" or "json"'),
        ('allow_apps = ["sha256:12"]\n', "write a list of quoted SHA-256 digests"),
        ("[settings]\nwhen = 2024-01-01\n", "[settings] when = datetime.date(2024, 1, 1)"),
        ("[settings]\nnested = [1, 2]\n", "is not a string, integer, float or boolean"),
        ("data_path = 3\n", "data_path = 3 is not valid"),
    ],
)
def test_a_bad_key_or_value_is_one_line_naming_it(tmp_path, text, said):
    with pytest.raises(ConfigError) as caught:
        load_site_config(_site(tmp_path, text))
    line = one_line(caught.value)
    assert said in line and "\n" not in str(caught.value), line


def test_session_app_settings_are_typed_bounded_and_leave_the_runtimes_keys_alone():
    config = SessionConfig(app_settings={"custom_key": 1, "tag": "x", "on": True, "r": 0.5})
    train = config.task_config(2)
    assert train["custom_key"] == 1 and type(train["custom_key"]) is int
    assert train["round"] == 2 and type(train["on"]) is bool
    assert config.validation_config(2) == {
        "custom_key": 1,
        "tag": "x",
        "on": True,
        "r": 0.5,
        "round": 2,
    }
    with pytest.raises(ValidationError, match="the runtime sends these itself"):
        SessionConfig(app_settings={"epochs": 3})
    with pytest.raises(ValidationError, match="at most"):
        SessionConfig(app_settings={f"k{i}": i for i in range(MAX_APP_SETTINGS + 1)})
    with pytest.raises(ValidationError, match="characters"):
        SessionConfig(app_settings={"text": "x" * 5000})
    with pytest.raises(ValidationError):
        SessionConfig(app_settings={"listed": [1, 2]})
    with pytest.raises(ValidationError, match="must be a letter"):
        SessionConfig(app_settings={"bad key": 1})


def test_app_setting_flags_are_typed_as_toml_values():
    assert app_setting("custom_key=1") == ("custom_key", 1)
    assert app_setting("ratio=0.5") == ("ratio", 0.5)
    assert app_setting("on=true") == ("on", True)
    assert app_setting("cohort=a") == ("cohort", "a")
    assert app_setting('quoted="1"') == ("quoted", "1")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        app_setting("nothing")


def test_the_example_site_file_is_valid():
    example = Path(__file__).resolve().parents[2] / "examples" / "site.toml"
    site = load_site_config(example)
    assert site.combiners == ("edge-hospital",) and site.metrics_port == 9464
    assert site.settings["max_epochs"] == 5 and site.settings["use_augmentation"] is True


def test_a_context_with_site_settings_pickles_and_stays_read_only():
    # the promise check's baselines hand the context to worker processes
    context = ClientContext(client_id="c-1", partition_id=2, settings={"cohort": "a", "n": 3})
    again = pickle.loads(pickle.dumps(context))
    assert again == context and dict(again.settings) == {"cohort": "a", "n": 3}
    with pytest.raises(TypeError):
        again.settings["n"] = 4  # type: ignore[index]
