"""`{% load rates %}`: one way to show a rate on every page (portal.rates)."""

from __future__ import annotations

from django import template

from portal import rates

register = template.Library()


@register.filter
def percent(value, digits=0):
    """{{ model.accuracy|percent }} -> "87 %"; {{ x|percent:1 }} -> "87.3 %"."""
    return rates.percent(value, int(digits))


@register.filter
def points(value, digits=0):
    """{{ image.predicted_margin|points }} -> "60 points": a difference of two probabilities."""
    return rates.points(value, int(digits))


@register.filter
def signed_points(value, digits=1):
    """{{ gate.diff|signed_points }} -> "+3.1": a change of a rate, in percentage points."""
    return rates.points(value, int(digits), signed=True)
