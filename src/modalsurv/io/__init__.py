"""modalsurv.io"""
