"""modalsurv.survival"""
