from bokeh.io import curdoc
from bokeh.plotting import figure

p = figure(title="Orders")
curdoc().add_root(p)
