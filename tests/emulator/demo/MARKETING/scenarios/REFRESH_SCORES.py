from dataiku.scenario import Scenario

s = Scenario()
s.build_dataset("leads", build_mode="RECURSIVE_FORCED_BUILD")
threshold = float(s.get_all_variables().get("lead_score_threshold", 0.7))
print("leads rebuilt, threshold", threshold)
