import dataiku

employees = dataiku.Dataset("employees").get_dataframe()
absences = dataiku.Dataset("absences").get_dataframe()

absences["month"] = absences["start_date"].dt.strftime("%Y-%m")
per_month = absences.groupby(["month", "employee_id"])["days"].sum().reset_index()
merged = per_month.merge(employees, on="employee_id", how="right")

headcount = (merged.groupby(["month", "department"])
             .agg(headcount=("employee_id", "nunique"), fte=("fte", "sum"),
                  absence_days=("days", "sum"))
             .reset_index())
dataiku.Dataset("headcount").write_with_schema(headcount)
