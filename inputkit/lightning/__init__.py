"""Lightning integration (``pip install 'inputkit-ml[lightning]'``): a data module whose
checkpoints resume the input mid-epoch, and a callback that logs the input's figures.

Importing this package imports Lightning; ``import inputkit`` does not. See docs/lightning.md.
"""

from inputkit.lightning.callback import InputkitMetricsCallback
from inputkit.lightning.datamodule import InputkitDataModule
from inputkit.lightning.loader import InputkitLoader

__all__ = ["InputkitDataModule", "InputkitLoader", "InputkitMetricsCallback"]
