"""Run by tests/test_lightning.py as a plain script (Lightning's DDP launcher starts rank 1 by
running this file again): a tiny fit on two CPU processes (gloo), each rank writing the sample
ids its training steps saw to ``OUT/ids-<tag>-rank<r>.txt``.

    python lightning_ddp_script.py OUT TAG MAX_STEPS [CKPT]
"""

import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

from inputkit.lightning import InputkitDataModule

warnings.filterwarnings("ignore")  # Lightning's hints about CPU DDP are not under test here

CFG = {"source": {"_target_": "synthetic", "length": 128, "id_field": "id",
                  "fields": {"x": {"shape": [4]}}},
       "batch_size": 8, "devices": "cpu", "epoch": {"shuffle": True, "seed": 3},
       "workers": {"kind": "thread", "count": 1}}


class Recorder(pl.LightningModule):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.path = path

    def training_step(self, batch, batch_idx):
        with self.path.open("a") as f:
            f.write(" ".join(str(i) for i in batch["id"].tolist()) + "\n")
        return self.layer(batch["x"].float()).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def main() -> None:
    out, tag, max_steps = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    ckpt = sys.argv[4] if len(sys.argv) > 4 else None
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                         max_steps=max_steps, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(out),
                         callbacks=[pl.callbacks.ModelCheckpoint(dirpath=str(out / "ckpt"),
                                                                 every_n_train_steps=3,
                                                                 save_top_k=-1)])
    model = Recorder(out / f"ids-{tag}-rank{trainer.global_rank}.txt")
    trainer.fit(model, datamodule=InputkitDataModule(CFG), ckpt_path=ckpt)


if __name__ == "__main__":
    main()
