import dataiku
from dataiku.customrecipe import get_input_names_for_role, get_output_names_for_role
from salestools.cleaning import normalize_country

df = dataiku.Dataset(get_input_names_for_role("input")[0]).get_dataframe()
df["country"] = df["country"].map(normalize_country)
dataiku.Dataset(get_output_names_for_role("output")[0]).write_with_schema(df)
