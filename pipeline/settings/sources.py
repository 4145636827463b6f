"""Where settings come from: flags, ``CDR_*`` variables, the YAML file, the secrets dir.

Contract: within :mod:`pipeline.settings`, this module and pydantic-settings'
environment source (``CDR_<NAME>``, nested with ``__``, configured on
:class:`pipeline.settings.Settings`) are the only readers of environment variables:
``CDR_CONFIG``, ``CDR_SECRETS_DIR`` and the ``AWS_*`` fallbacks of the ``lake``
section are read here. :func:`sources`
orders the sources, first one wins: flags (init values), environment, settings file,
secret files. :func:`config_file` checks a settings file before anything is built
(a :class:`~pipeline.errors.ConfigError` naming the problem, never quoting the file,
which may hold secrets) and refuses a ``CDR_SECRETS_DIR`` that is not a directory.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    YamlConfigSettingsSource,
)

from pipeline.errors import ConfigError

#: The AWS variables read when the ``lake`` section leaves a value unset (the usual
#: names of the AWS SDKs and CLI; the first one set wins).
AWS_ENV = {
    "s3_access_key_id": ("AWS_ACCESS_KEY_ID",),
    "s3_secret_access_key": ("AWS_SECRET_ACCESS_KEY",),
    "s3_session_token": ("AWS_SESSION_TOKEN",),
    "s3_region": ("AWS_REGION", "AWS_DEFAULT_REGION"),
    "s3_endpoint": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
}

#: The settings file given to :func:`~pipeline.settings.load_settings` (``--config``)
#: while it builds the settings; ``CDR_CONFIG`` is read when the sources are built.
_CONFIG_FILE: dict[str, str] = {}


def aws_environment() -> dict[str, str | None]:
    """For each ``lake`` field of :data:`AWS_ENV`, the first of its AWS variables that is
    set and not empty, else None."""
    return {
        name: next((os.environ[v] for v in names if os.environ.get(v)), None)
        for name, names in AWS_ENV.items()
    }


def check_config_file(path: Path, given_as: str = "") -> None:
    """:class:`ConfigError` unless ``path`` is a readable UTF-8 YAML file holding a mapping
    (or nothing). Messages give the position of a syntax error but never quote the file,
    which may hold secrets; checked before anything connects or writes."""
    import yaml

    name = f"settings file {given_as}{path}"
    if path.is_dir():
        raise ConfigError(f"{name} is a directory, not a YAML file")
    if not path.is_file():
        raise ConfigError(f"{name}: settings file not found")
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{name} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name} is not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise ConfigError(f"{name} is not valid YAML{where}: {problem}") from None
    if data is not None and not isinstance(data, dict):
        raise ConfigError(
            f"{name} must be a mapping of settings (key: value), not a {type(data).__name__}"
        )


@contextmanager
def config_file(path: Path | None) -> Iterator[None]:
    """Check the settings file (``path``, else ``CDR_CONFIG``) with
    :func:`check_config_file`, then make ``path`` the file :func:`sources` reads while
    the block runs (the settings are built inside it)."""
    if path is not None:
        check_config_file(Path(path))
        _CONFIG_FILE["path"] = str(path)
    elif os.environ.get("CDR_CONFIG"):
        check_config_file(Path(os.environ["CDR_CONFIG"]), "CDR_CONFIG=")
    try:
        yield
    finally:
        _CONFIG_FILE.pop("path", None)


def sources(
    settings_cls: type[BaseSettings],
    init_settings: PydanticBaseSettingsSource,
    env_settings: PydanticBaseSettingsSource,
    file_secret_settings: PydanticBaseSettingsSource,
) -> tuple[PydanticBaseSettingsSource, ...]:
    """The sources of ``settings_cls``, first one wins: flags, environment, the settings
    file (the one of :func:`config_file`, i.e. ``--config``, else ``CDR_CONFIG``), the files of
    ``CDR_SECRETS_DIR`` (:class:`ConfigError` if that is not a directory)."""
    chosen: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
    yaml_file = _CONFIG_FILE.get("path") or os.environ.get("CDR_CONFIG")  # --config wins
    if yaml_file:
        chosen.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
    secrets_dir = os.environ.get("CDR_SECRETS_DIR")
    if secrets_dir:
        if not Path(secrets_dir).is_dir():
            raise ConfigError(f"CDR_SECRETS_DIR={secrets_dir}: no such directory")
        # One file per setting, nested with "__" like the variables, no CDR_ prefix:
        # redis__password, kafka__sasl_password (the plain secrets source of
        # pydantic-settings would want one JSON file per nested model).
        chosen.append(
            NestedSecretsSettingsSource(
                file_secret_settings,
                secrets_dir=secrets_dir,
                secrets_prefix="",
                secrets_nested_delimiter="__",
            )
        )
    return tuple(chosen)
