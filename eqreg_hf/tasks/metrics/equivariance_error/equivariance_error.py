"""Equivariance error as an `evaluate` metric: how far a model's features are from rotating with its input.

Loads offline from this file or its folder::

    import evaluate
    metric = evaluate.load("path/to/eqreg_hf/tasks/metrics/equivariance_error")
"""

import datasets
import evaluate
import numpy as np
import torch

from eqreg_hf.core.groups import rotate_features, shift_channels
from eqreg_hf.core.paper import CITATION, PAPER_URL

_CITATION = CITATION

_DESCRIPTION = """\
Relative equivariance error of feature maps under the rotation group C_t (EQ-Reg, Bai et al., CVPR 2025):

    error = || T_k F(x) - F(R_k x) ||  /  || F(R_k x) ||

pooled over all examples (numerator and denominator summed over the whole set, as
`eqreg_hf.equivariance_error` does for one batch). `predictions` are F(x), `references` are F(R_k x),
where R_k rotates the input by k * 360/t degrees counter-clockwise and T_k rotates a feature map by the
same angle and, for a "regular" field, cyclically shifts its channel groups (channel c = i*t + j, j
rolled by +k). 0 means exactly equivariant; unrelated maps of equal norm give about 1.41.
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: features of the original inputs, one per example: [C, H, W] maps (or [D] vectors such
        as logits).
    references: features of the rotated inputs R_k x, same kinds ([C, W, H] for a non-square map and
        an odd number of quarter turns).
    k (int): the rotation of every example (default 1), or
    ks (list of int): one rotation per example (overrides k).
    group_order (int): t of C_t (default 4; 2 and 4 rotate exactly, others interpolate).
    field (str): "regular" (rotate + shift channel groups, default) or "trivial" (rotate only; for
        vectors: compare as they are, i.e. invariance of logits).
Returns:
    equivariance_error (float): pooled relative error, 0 = equivariant.
    per_example (list of float): ||T_k a - b|| / ||b|| for each example.
Examples:
    >>> import numpy as np, evaluate
    >>> metric = evaluate.load("eqreg_hf/tasks/metrics/equivariance_error")  # doctest: +SKIP
    >>> f = np.random.rand(8, 5, 5).astype("float32")           # F(x): 8 channels = 2 fields x C4
    >>> g = np.rot90(np.roll(f.reshape(2, 4, 5, 5), 1, axis=1).reshape(8, 5, 5), 1, axes=(1, 2))
    >>> metric.compute(predictions=[f], references=[g], k=1)["equivariance_error"]  # doctest: +SKIP
    0.0
"""


def _features(rank):
    value = datasets.Value("float32")
    for _ in range(rank):
        value = datasets.Sequence(value)
    return datasets.Features({"predictions": value, "references": value})


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class EquivarianceError(evaluate.Metric):
    """`evaluate` wrapper of the EQ-Reg relative equivariance error (see the module docstring)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[_features(3), _features(1)],
            reference_urls=[PAPER_URL],
        )

    def _compute(self, predictions, references, k=1, ks=None, group_order=4, field="regular"):
        if field not in ("regular", "trivial"):
            raise ValueError(f"Unknown field {field!r}. Choose between ['regular', 'trivial'].")
        n = len(predictions)
        if len(references) != n:
            raise ValueError(
                f"Got {n} predictions but {len(references)} references; pass one F(R_k x) per F(x)."
            )
        if ks is None:
            ks = [int(k)] * n
        if len(ks) != n:
            raise ValueError(
                f"ks has {len(ks)} entries for {n} examples; give one rotation per example or use k=."
            )
        num = 0.0
        den = 0.0
        per_example = []
        for a, b, kk in zip(predictions, references, ks):
            a = torch.as_tensor(np.asarray(a, dtype=np.float32))
            b = torch.as_tensor(np.asarray(b, dtype=np.float32))
            if a.dim() == 3:
                ta = rotate_features(a.unsqueeze(0), int(kk), group_order, field=field)[0]
            elif a.dim() == 1:
                ta = (
                    shift_channels(a.unsqueeze(0), int(kk), group_order, dim=1)[0]
                    if field == "regular"
                    else a
                )
            else:
                raise ValueError(
                    f"Each prediction must be a [C, H, W] map or a [D] vector, got shape {tuple(a.shape)}."
                )
            if ta.shape != b.shape:
                raise ValueError(
                    f"T_k F(x) has shape {tuple(ta.shape)} but the reference F(R_k x) has "
                    f"{tuple(b.shape)}: check that references come from the rotated inputs with the same k."
                )
            d = float(torch.sum((ta - b) ** 2))
            r = float(torch.sum(b**2))
            num += d
            den += r
            per_example.append(float(np.sqrt(d) / max(np.sqrt(r), 1e-12)))
        return {
            "equivariance_error": float(np.sqrt(num) / max(np.sqrt(den), 1e-12)),
            "per_example": per_example,
        }
