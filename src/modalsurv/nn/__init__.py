"""modalsurv.nn"""
