library(shiny)

fluidPage(titlePanel("Customers"), tableOutput("t"))
