"""The paper EQ-Reg comes from, in one place (model cards, the evaluate module, network metadata)."""

from __future__ import annotations

PAPER_TITLE = "A Regularization-Guided Equivariant Approach for Image Restoration"
PAPER_AUTHORS = "Bai, Fu, Xie, Meng"
PAPER_VENUE = "CVPR 2025"
PAPER_ARXIV = "2505.19799"
PAPER_URL = f"https://arxiv.org/abs/{PAPER_ARXIV}"
CITATION = """@inproceedings{bai2025eqreg,
  title     = {A Regularization-Guided Equivariant Approach for Image Restoration},
  author    = {Bai, Yulu and Fu, Jiahong and Xie, Qi and Meng, Deyu},
  booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
  year      = {2025},
  eprint    = {2505.19799},
  archivePrefix = {arXiv}
}"""

__all__ = ["PAPER_TITLE", "PAPER_AUTHORS", "PAPER_VENUE", "PAPER_ARXIV", "PAPER_URL", "CITATION"]
