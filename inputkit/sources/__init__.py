"""Sources (fetch plugins): the protocol, the loader for ``_target_`` and built-in sources."""

from inputkit.sources.loader import BoundSource, build_source, import_target
from inputkit.sources.protocol import FetchResult, Source
from inputkit.sources.synthetic import SyntheticSource

__all__ = ["BoundSource", "FetchResult", "Source", "SyntheticSource", "build_source", "import_target"]
