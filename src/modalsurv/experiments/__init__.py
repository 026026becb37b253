"""modalsurv.experiments"""
