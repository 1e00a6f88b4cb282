"""Helpers of the clean-orders recipe."""


def normalize_country(code):
    return (code or "").strip().upper()[:2]
