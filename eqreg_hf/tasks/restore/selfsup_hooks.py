"""The recipe hooks of self-supervised inpainting (``supervision="self"``): the restore recipe's data, checks,
task loss, evaluation and card facts when the training set is measurements only.

:class:`SelfSupervisedHooks` is a mixin put in front of the restore recipe
(``tasks.restore.recipe.SelfSupervisedRestoreRecipe``); the runner's skeleton, the model, the engines and the
saving stay the restore recipe's. What changes:

* data: the training split becomes a :class:`~eqreg_hf.tasks.restore.measurements.MeasurementSet` — given
  (rows with ``measurement`` and ``mask``; any clean column is never read) or acquired once from the clean
  training images, which are then dropped; the held-out split stays clean images (evaluation may read them);
* training items: crops of the measurement and its mask (:class:`MeasurementCrops`), the task loss deepinv's
  MC / EI / REI (:class:`~eqreg_hf.tasks.restore.selfsup.SelfSupervisedLoss`), in the loop and the Trainer;
* checks: EQ-Reg's group must move whole pixels (its stacked rows are turned measurements), the crop must fit;
* evaluation: the held-out images only (a self-supervised run has no clean training image: ``train_psnr`` is
  NaN); the card and ``RunResult.info`` say the run was self-supervised and with which losses.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from eqreg_hf.core.config import EqRegConfig
from eqreg_hf.tasks.restore.evaluate import check_model_output, run_evaluation
from eqreg_hf.tasks.restore.measurements import (
    MeasurementCrops,
    MeasurementSet,
    is_measurement_data,
    simulate_measurements,
)
from eqreg_hf.tasks.restore.selfsup import SelfSupervisedLoss, check_pixel_group, describe_losses

__all__ = ["SelfSupervisedHooks", "measurement_training_set"]


def measurement_training_set(args: Any, train: Any, measurements: Any) -> MeasurementSet:
    """The measurements a self-supervised run trains on: ``train`` itself when it holds measurements (after
    ``train_size`` = 'all' or N), else the clean images of ``train`` acquired once (seed ``args.seed``)."""
    if not is_measurement_data(train):
        from eqreg_hf.data.restore import select_training_set

        return simulate_measurements(select_training_set(train, args.train_size), measurements, args.seed)
    data = MeasurementSet.from_dataset(train)
    size = str(args.train_size)
    if size.startswith("region"):
        raise ValueError(
            f"train_size={size!r} cuts a region of a clean image, but the training data are measurements: "
            "use train_size='all' or a number of measurements N."
        )
    return data if size == "all" else data.head(int(size))


class SelfSupervisedHooks:
    """Mixin of the restore recipe for ``supervision="self"`` (see the module docstring)."""

    def load_data(self, args: Any, train: Any, test: Any) -> tuple[Any, Any]:
        """(the training measurements, the clean held-out images or pairs)."""
        from eqreg_hf.data.restore import load_clean_images

        common = {"photo_size": args.photo_size, "data_dir": args.data_dir}
        train = load_clean_images(args.source, "train", **common) if train is None else train
        test = load_clean_images(args.source, "test", **common) if test is None else test
        return measurement_training_set(args, train, self.degradation(args)), test

    def check(self, args: Any, model: nn.Module, eqreg: EqRegConfig | None, data: tuple) -> None:
        if eqreg is not None and eqreg.stacks:  # the term, or the pair control: rows of turned measurements
            check_pixel_group(eqreg.group_spec.name, "EQ-Reg's group")
        MeasurementCrops(data[0], args.crop_size)  # refuses a crop larger than a measurement
        check_model_output(model, self.degradation(args), args.crop_size, eqreg)

    def evaluation(self, args: Any, model: nn.Module, data: tuple, group: str) -> Any:
        settings = {"max_images": args.eval_max_images, "equiv_images": args.equiv_images}
        settings.update(group=group, curve_errors=args.curve_errors)
        return run_evaluation(model, self.degradation(args), None, data[1], **settings)

    def train_data(self, args: Any, train: Any) -> tuple[Any, Any]:
        """Crops ``{"pixel_values": y, "labels": pack(y, mask)}``, turned / mirrored per ``args.augment``."""
        from eqreg_hf.data.restore import restore_collate

        augment = None if args.augment == "none" else args.augment
        return MeasurementCrops(train, args.crop_size, seed=args.seed, augment=augment), restore_collate

    def task_loss(self, args: Any, model: nn.Module) -> Any:
        return SelfSupervisedLoss(
            model,
            self.degradation(args),
            loss=args.selfsup_loss,
            ei_weight=args.ei_weight,
            group=args.ei_group,
            seed=args.seed,
            sure_tau=args.sure_tau,
        )

    def info(self, args: Any, model: nn.Module) -> dict[str, Any]:
        losses = describe_losses(args.selfsup_loss, args.ei_weight, args.ei_group, args.poisson_gain)
        losses["sure_tau"] = args.sure_tau if args.selfsup_loss == "rei" else None
        training = {"supervision": "self", **{k: v for k, v in losses.items() if v is not None}}
        words = f"{losses['fit']}" + (
            f" + {args.ei_weight:g} · {losses['equivariance']}" if "ei_weight" in losses else ""
        )
        card = (
            "Trained **self-supervised**, from measurements only (no clean training image was read): "
            f"{words}. Each training image was measured once (a random pixel mask, and Poisson noise when a "
            "gain is set); the clean held-out images serve the evaluation only."
        )
        return {
            "degradation": self.degradation(args).to_dict(),
            "training": training,
            "card_description": card,
        }
