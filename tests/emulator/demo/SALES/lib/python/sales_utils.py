def eur(amount):
    """Format an amount in euros."""
    return "%.2f \u20ac" % amount
