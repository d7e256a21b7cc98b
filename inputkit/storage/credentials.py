"""Credentials from where users already keep them, for what the client does not read itself.

obstore (the Rust object_store crate) reads the AWS_*, GOOGLE_* and AZURE_* environment
variables, web-identity tokens and instance metadata, but not the AWS shared credentials
and config files nor an Azure connection string: those two are read here.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping


def aws_profile() -> dict[str, str]:
    """Keys, session token and region of the AWS profile ($AWS_PROFILE, else ``default``) from
    $AWS_SHARED_CREDENTIALS_FILE (~/.aws/credentials) and $AWS_CONFIG_FILE (~/.aws/config), in
    obstore's config names; empty when the environment already holds keys or no file has the
    profile."""
    found: dict[str, str] = {}
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    home = os.path.expanduser("~")
    if not os.environ.get("AWS_ACCESS_KEY_ID"):
        creds = _read(os.environ.get("AWS_SHARED_CREDENTIALS_FILE")
                      or os.path.join(home, ".aws", "credentials"))
        if creds.has_section(profile):
            section = creds[profile]
            for ours, theirs in (("access_key_id", "aws_access_key_id"),
                                 ("secret_access_key", "aws_secret_access_key"),
                                 ("token", "aws_session_token")):
                if section.get(theirs):
                    found[ours] = section[theirs]
    config = _read(os.environ.get("AWS_CONFIG_FILE") or os.path.join(home, ".aws", "config"))
    name = profile if profile == "default" else f"profile {profile}"
    settings: Mapping[str, str] = config[name] if config.has_section(name) else {}
    # the environment wins over the file, each setting on its own (a region in the
    # environment used to hide the file's endpoint_url too)
    if settings.get("region") and not (os.environ.get("AWS_REGION")
                                      or os.environ.get("AWS_DEFAULT_REGION")):
        found["region"] = settings["region"]
    if settings.get("endpoint_url") and not environment_endpoint():
        found["endpoint"] = settings["endpoint_url"]
    return found


def environment_endpoint() -> str | None:
    """The S3 endpoint the environment names: AWS_ENDPOINT_URL_S3 (the service's own, first,
    as the AWS tools take it), else AWS_ENDPOINT_URL."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def azure_connection_string() -> dict[str, str]:
    """Account name, key and blob endpoint from $AZURE_STORAGE_CONNECTION_STRING, in obstore's
    config names (empty when unset)."""
    text = os.environ.get("AZURE_STORAGE_CONNECTION_STRING", "")
    parts = dict(item.split("=", 1) for item in text.split(";") if "=" in item)
    found: dict[str, str] = {}
    for ours, theirs in (("account_name", "AccountName"), ("account_key", "AccountKey"),
                         ("endpoint", "BlobEndpoint"), ("sas_key", "SharedAccessSignature")):
        if parts.get(theirs):
            found[ours] = parts[theirs]
    return found


def _read(path: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    if os.path.isfile(path):
        parser.read(path)
    return parser
