"""One obstore client per cloud, built from the ``storage.*`` settings and the environment.

Why apart from ``store.py``: how each cloud's client is configured (credentials files, an
emulator's endpoint, an Azure account named in the URL) changes with each cloud, while how a
request is made, retried, gated and counted does not. The store asks for a client here once per
process; obstore itself is imported only then, never by ``import inputkit``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from inputkit.storage.credentials import aws_profile, azure_connection_string, environment_endpoint
from inputkit.storage.errors import StorageError
from inputkit.storage.settings import StorageSettings
from inputkit.storage.urls import Location

INSTALL_HINT = "pip install 'inputkit-ml[storage]'"


def obstore_module() -> Any:
    """The obstore package; an ImportError saying what to install when it is missing."""
    try:
        import obstore
    except ImportError as exc:
        raise ImportError(f"reading s3://, gs://, az:// or http(s):// data needs obstore: "
                          f"{INSTALL_HINT}") from exc
    return obstore


def client_options(base: Location, cfg: StorageSettings, endpoint: str | None) -> dict[str, Any]:
    """Timeouts from the settings; plain http allowed when the endpoint (or the URL) uses it."""
    options: dict[str, Any] = {
        "timeout": timedelta(seconds=cfg.timeout_s),
        "connect_timeout": timedelta(seconds=cfg.connect_timeout_s),
    }
    scheme = endpoint or base.scheme
    if scheme.startswith("http") and not scheme.startswith("https"):
        options["allow_http"] = True
    return options


def s3_client(base: Location, cfg: StorageSettings) -> Any:
    """s3:// (and S3-compatible servers via AWS_ENDPOINT_URL or storage.endpoint)."""
    from obstore.store import S3Store as Client

    config: dict[str, Any] = aws_profile()
    if environment_endpoint():  # the client reads AWS_ENDPOINT_URL, not the _S3 one
        config["endpoint"] = environment_endpoint()
    if cfg.endpoint:
        config["endpoint"] = cfg.endpoint
    if cfg.region:
        config["region"] = cfg.region
    if cfg.anonymous:
        config["skip_signature"] = True
    config.update(cfg.options)
    endpoint = config.get("endpoint")
    return _built(base, lambda: Client(
        base.bucket, config=config, client_options=client_options(base, cfg, endpoint),
        retry_config={"max_retries": 0}))


def gcs_client(base: Location, cfg: StorageSettings) -> Any:
    """gs:// (credentials: GOOGLE_APPLICATION_CREDENTIALS / GOOGLE_SERVICE_ACCOUNT*)."""
    from obstore.store import GCSStore as Client

    config: dict[str, Any] = {}
    if cfg.anonymous:
        config["skip_signature"] = True
    config.update(cfg.options)
    if cfg.endpoint:  # an emulator (fake-gcs-server) or a private endpoint
        config["base_url"] = cfg.endpoint
    return _built(base, lambda: Client(
        base.bucket, config=config, client_options=client_options(base, cfg, cfg.endpoint),
        retry_config={"max_retries": 0}))


def azure_client(base: Location, cfg: StorageSettings) -> Any:
    """az:// azure:// abfs[s]:// (AZURE_STORAGE_ACCOUNT_NAME / _KEY / _CONNECTION_STRING / SAS)."""
    from obstore.store import AzureStore as Client

    config: dict[str, Any] = azure_connection_string()
    container, _, account = base.bucket.partition("@")
    if account:  # abfss://container@account.dfs.core.windows.net
        config["account_name"] = account.split(".", 1)[0]
    config.update(cfg.options)
    if not config.get("account_name"):
        config["account_name"] = os.environ.get("AZURE_STORAGE_ACCOUNT_NAME", "")
    if not config["account_name"] and not os.environ.get("AZURE_STORAGE_USE_EMULATOR"):
        raise StorageError(base.base, "other", "names no storage account; set "
                           "AZURE_STORAGE_ACCOUNT_NAME (or AZURE_STORAGE_CONNECTION_STRING), "
                           "or write abfss://<container>@<account>.dfs.core.windows.net/...")
    if not config["account_name"]:
        del config["account_name"]  # the emulator's own account
    if cfg.anonymous:
        config["skip_signature"] = True
    if cfg.endpoint:
        config["endpoint"] = cfg.endpoint
    return _built(base, lambda: Client(
        container, config=config,
        client_options=client_options(base, cfg, config.get("endpoint")),
        retry_config={"max_retries": 0}))


def http_client(base: Location, cfg: StorageSettings) -> Any:
    """http:// https:// (plain GETs and ranged GETs)."""
    from obstore.store import HTTPStore as Client

    return _built(base, lambda: Client.from_url(
        base.base, client_options=client_options(base, cfg, base.scheme),
        retry_config={"max_retries": 0}))


def _built(base: Location, make: Callable[[], Any]) -> Any:
    obstore_module()
    try:
        return make()
    except Exception as exc:  # noqa: BLE001 - a bad option or credential names the store
        raise StorageError(base.base, "other", f"cannot set up the client: {exc}; check the "
                           "storage.* keys and the credentials in the environment") from exc
