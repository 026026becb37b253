"""modalsurv.train"""
