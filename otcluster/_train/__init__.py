"""The self-labelling trainer in parts (see ``docs/design.md``, module map).

``config``    TrainerConfig and its validation
``model``     SelfLabelModel: encoders + heads, log-probabilities from features, from_checkpoint
``data``      collate, DataLoaders over positions, evaluation passes
``clustering``  one clustering of every sample, dense or memory-bounded, through the labeler
``alignment`` eq. 7 alignment of the heads of every modality to the first's
``inference`` extract / predict over any dataset (no optimiser, no training dataset)
``state``     the trainer's checkpoint: state dict, restore, files
``trainer``   SelfLabelTrainer: the loop that ties them together
"""

from .config import TrainerConfig
from .model import SelfLabelModel
from .trainer import SelfLabelTrainer

__all__ = ["SelfLabelModel", "SelfLabelTrainer", "TrainerConfig"]
