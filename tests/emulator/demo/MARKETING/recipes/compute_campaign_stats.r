library(dataiku)
library(dplyr)

events <- dkuReadDataset("web_events", samplingMethod = "full")
campaigns <- dkuReadDataset("campaigns")

stats <- events %>%
  filter(!is.na(campaign_id)) %>%
  group_by(campaign_id) %>%
  summarise(sessions = n_distinct(session_id),
            conversions = sum(event_type == "signup")) %>%
  mutate(conversion_rate = conversions / sessions) %>%
  semi_join(campaigns, by = "campaign_id")

dkuWriteDataset(stats, "campaign_stats")
