"""modalsurv.train: fit, cross-validate, ensemble and compare survival models.

``ModalSurv`` (estimator.py) fits one network with its own train-fitted preprocessing and
time bins; ``cross_validate`` (cv.py) runs the nested CV protocol with baselines on the
same folds; ``FoldEnsemble`` (ensemble.py) turns the fold models into one predictor.
"""

from modalsurv.train.cv import CVResult, cross_validate
from modalsurv.train.ensemble import FoldEnsemble
from modalsurv.train.estimator import ModalSurv

__all__ = ["CVResult", "FoldEnsemble", "ModalSurv", "cross_validate"]
