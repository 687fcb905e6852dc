"""Analyses of why residual learning works: functions of (model, data) that return numbers.

Each module computes; plotting lives in reslab.plots and HTML in reslab.report.
"""
