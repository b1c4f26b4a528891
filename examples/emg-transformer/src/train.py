"""Train a small Transformer encoder on generated multichannel EMG-like time series.

    python src/train.py --config configs/training_config.yaml
    python src/train.py --config configs/training_config.yaml --resume checkpoints/last_model.pth

Each class ("gesture") drives the channels with its own band of frequencies, in bursts,
under Gaussian noise; the data are the same for the same seed. The loop: AdamW, a plateau
schedule, label smoothing, gradient clipping, early stopping on val_loss, and checkpoints
(``best_model.pth``, ``last_model.pth``) that ``--resume`` continues from.

Each epoch prints one ``name=value`` line (``epoch=3 val_loss=0.41 val_acc=0.8``), which
hpo can read unchanged; with hpo installed the script also reports through its client and
stops when hpo's pruner says so.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:  # tuning with hpo: the script runs the same without it
    import hpo
except ImportError:
    hpo = None


# -- data ------------------------------------------------------------------------------
def make_signals(cfg: dict[str, Any], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``num_samples`` windows of shape (seq_len, num_channels) and their class labels."""
    g = torch.Generator().manual_seed(seed)
    n, c, t, k = cfg["num_samples"], cfg["num_channels"], cfg["seq_len"], cfg["num_classes"]
    labels = torch.arange(n) % k
    labels = labels[torch.randperm(n, generator=g)]
    time_axis = torch.arange(t, dtype=torch.float32) / t
    # class k: a band of frequencies (cycles per window around 4 + 4k, each channel a
    # little off, random phase) and its own pattern of which muscles (channels) fire
    base = 4.0 + 4.0 * labels.float()
    freq = base[:, None] + torch.rand(n, c, generator=g) * 2.0
    phase = torch.rand(n, c, generator=g) * 2 * math.pi
    wave = torch.sin(2 * math.pi * freq[:, :, None] * time_axis + phase[:, :, None])
    pattern = 0.2 + torch.rand(k, c, generator=g)
    gain = pattern[labels] * (0.7 + 0.6 * torch.rand(n, 1, generator=g))
    # a muscle activates in a burst: a smooth envelope centred somewhere in the window
    centre = torch.rand(n, 1, 1, generator=g) * 0.6 + 0.2
    envelope = torch.exp(-(((time_axis - centre) / 0.3) ** 2))
    x = gain[:, :, None] * envelope * wave + cfg["noise"] * torch.randn(n, c, t, generator=g)
    return x.transpose(1, 2).contiguous(), labels


def loaders(cfg: dict[str, Any], batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
    x, y = make_signals(cfg, seed)
    cut = int(0.8 * len(x))
    mean, std = x[:cut].mean(dim=(0, 1)), x[:cut].std(dim=(0, 1))  # train statistics only
    x = (x - mean) / std
    shuffle = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(x[:cut], y[:cut]), batch_size, shuffle=True, generator=shuffle)
    val = DataLoader(TensorDataset(x[cut:], y[cut:]), batch_size=512)
    return train, val


# -- model -----------------------------------------------------------------------------
class EMGTransformer(nn.Module):
    """Patches of ``patch_size`` time steps embedded by a strided convolution over all
    channels, a learned position embedding, a Transformer encoder, mean pooling, a head."""

    def __init__(self, channels: int, seq_len: int, classes: int, cfg: dict[str, Any]) -> None:
        super().__init__()
        h, patch = cfg["hidden_size"], cfg["patch_size"]
        self.embed = nn.Conv1d(channels, h, kernel_size=patch, stride=patch)
        self.position = nn.Parameter(torch.zeros(1, seq_len // patch, h))
        layer = nn.TransformerEncoderLayer(
            h, cfg["num_heads"], dim_feedforward=2 * h, dropout=cfg["dropout"], batch_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, cfg["num_layers"], enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.embed(x.transpose(1, 2)).transpose(1, 2)  # (batch, patches, hidden)
        z = self.encoder(tokens + self.position)
        return self.head(z.mean(dim=1))


@torch.no_grad()
def evaluate(model: nn.Module, val: DataLoader, loss_fn: nn.Module) -> tuple[float, float]:
    """Mean validation loss and accuracy."""
    model.eval()
    loss = correct = count = 0.0
    for x, y in val:
        logits = model(x)
        loss += loss_fn(logits, y).item() * len(y)
        correct += (logits.argmax(dim=1) == y).sum().item()
        count += len(y)
    return loss / count, correct / count


# -- training --------------------------------------------------------------------------
def train(config: dict[str, Any], resume: str | None) -> float:
    """Train until ``num_epochs``, early stopping or a prune; returns the best val_loss."""
    data, t = config["data"], config["training"]
    torch.manual_seed(config.get("seed", 0))
    train_loader, val_loader = loaders(data, t["batch_size"], config.get("seed", 0))
    model = EMGTransformer(
        data["num_channels"], data["seq_len"], data["num_classes"], config["model"]
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=t["learning_rate"], weight_decay=t["weight_decay"]
    )
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=2)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=t["label_smoothing"])
    ckpt_dir = Path(t["checkpoint_dir"])

    start, best, bad_epochs = 0, math.inf, 0
    if resume:
        state = torch.load(resume, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start, best, bad_epochs = state["epoch"] + 1, state["best"], state["bad_epochs"]
        print(f"resumed from {resume} at epoch {start}", flush=True)

    for epoch in range(start, t["num_epochs"]):
        # train one epoch: forward, backward, clip, step
        model.train()
        total = 0.0
        for x, y in train_loader:
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
            optimizer.step()
            total += loss.item() * len(y)
        train_loss = total / len(train_loader.dataset)

        # evaluate, schedule, log
        val_loss, val_acc = evaluate(model, val_loader, loss_fn)
        scheduler.step(val_loss)
        lr = optimizer.param_groups[0]["lr"]
        improved = val_loss < best
        best, bad_epochs = (val_loss, 0) if improved else (best, bad_epochs + 1)
        print(
            f"epoch={epoch} train_loss={train_loss:.4f} val_loss={val_loss:.4f} "
            f"val_acc={val_acc:.4f} lr={lr:.2e}",
            flush=True,
        )

        # checkpoint: the last epoch always, the best one when it improved
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "best": best,
            "bad_epochs": bad_epochs,
        }
        torch.save(state, ckpt_dir / "last_model.pth")
        if improved:
            torch.save(state, ckpt_dir / "best_model.pth")

        # hpo's pruner may stop a poor trial early
        if hpo and hpo.report(epoch, val_loss=val_loss, val_acc=val_acc):
            break
        if bad_epochs >= t["patience"]:
            print(f"early stop: no better val_loss for {bad_epochs} epochs", flush=True)
            break
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML training config")
    parser.add_argument("--resume", help="checkpoint to continue from (last_model.pth)")
    args = parser.parse_args()
    with open(args.config) as f:
        config = yaml.safe_load(f)
    best = train(config, args.resume)
    print(f"best val_loss: {best:.4f}", flush=True)


if __name__ == "__main__":
    main()
