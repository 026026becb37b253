import modalsurv


def test_top_level_exports():
    from modalsurv import Cohort, ModalSurv, RunConfig, cross_validate
    from modalsurv.train import cross_validate as cv

    assert cross_validate is cv
    assert callable(ModalSurv) and callable(Cohort) and callable(RunConfig)
    assert set(modalsurv.__all__) >= {"ModalSurv", "cross_validate"}
