library(shiny)

function(input, output) {
  output$t <- renderTable(head(mtcars))
}
