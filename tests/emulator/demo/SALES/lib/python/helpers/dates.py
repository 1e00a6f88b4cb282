import datetime


def month_of(ts):
    return datetime.date.fromtimestamp(ts).strftime("%Y-%m")
