from dataiku.scenario import Scenario
import dataiku

scenario = Scenario()
orders = dataiku.Dataset("orders")
metrics = orders.compute_metrics()
count = int(metrics["result"]["computed"][0]["value"]) if metrics["result"]["computed"] else 0

if count == 0:
    scenario.set_scenario_variables(orders_ok=False)
    raise Exception("No orders received since the last export")

scenario.set_scenario_variables(orders_ok=True)
