"""modalsurv.data"""
