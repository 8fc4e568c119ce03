"""Tiny models and data shared by the trainer tests and the torchrun scripts (no downloads)."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset


class TinyDerainer(nn.Module):
    """A plain restoration CNN without BatchNorm: forward(x) -> image (residual)."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.head = nn.Conv2d(3, channels, 3, padding=1)
        self.body = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU())
        self.tail = nn.Conv2d(channels, 3, 3, padding=1)

    def forward(self, x):
        return x + self.tail(self.body(self.head(x)))


TINY_DERAIN_LAYERS = ["head", "body.1"]


class PairDataset(Dataset):
    """{"pixel_values": rainy, "labels": clean} pairs (synthetic streaks)."""

    def __init__(self, n: int = 16, size: tuple[int, int] = (9, 9), seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.clean = torch.rand(n, 3, *size, generator=g)
        streaks = (torch.rand(n, 1, *size, generator=g) > 0.85).float() * 0.5
        self.rainy = (self.clean + streaks).clamp(0, 1)

    def __len__(self):
        return len(self.clean)

    def __getitem__(self, i):
        return {"pixel_values": self.rainy[i], "labels": self.clean[i]}


class ClassDataset(Dataset):
    """{"pixel_values": image, "labels": class} items."""

    def __init__(self, n: int = 16, size: int = 12, num_labels: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = torch.randint(0, num_labels, (n,), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def tiny_vit(num_labels: int = 3, image_size: int = 12, seed: int = 0):
    from transformers import ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg = ViTConfig(
        image_size=image_size,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=16,
        num_labels=num_labels,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    return ViTForImageClassification(cfg)


def tiny_convnext(num_labels: int = 3, seed: int = 0):
    from transformers import ConvNextConfig, ConvNextForImageClassification

    torch.manual_seed(seed)
    cfg = ConvNextConfig(
        num_channels=3,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        num_stages=2,
        num_labels=num_labels,
        patch_size=2,
        drop_path_rate=0.0,
    )
    return ConvNextForImageClassification(cfg)


def tiny_resnet(num_labels: int = 3, seed: int = 0):
    from transformers import ResNetConfig, ResNetForImageClassification

    torch.manual_seed(seed)
    cfg = ResNetConfig(
        num_channels=3,
        embedding_size=8,
        hidden_sizes=[8, 16],
        depths=[1, 1],
        layer_type="basic",
        num_labels=num_labels,
    )
    return ResNetForImageClassification(cfg)


def flat_params(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])


def tiny_args(output_dir: str, args_cls=None, **overrides):
    from transformers import TrainingArguments

    args_cls = args_cls or TrainingArguments
    kw = dict(
        output_dir=output_dir,
        per_device_train_batch_size=4,
        max_steps=2,
        learning_rate=0.05,
        optim="sgd",
        lr_scheduler_type="constant",
        max_grad_norm=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        train_sampling_strategy="sequential",
        disable_tqdm=True,
        seed=0,
        remove_unused_columns=False,
    )
    kw.update(overrides)
    return args_cls(**kw)
