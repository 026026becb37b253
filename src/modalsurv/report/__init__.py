"""modalsurv.report"""
