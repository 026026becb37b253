"""modalsurv.features"""
