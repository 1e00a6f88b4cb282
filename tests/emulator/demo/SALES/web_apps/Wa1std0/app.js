$.getJSON(getWebAppBackendUrl('/total'), function (d) {
  $('#chart').text(d.total);
});
