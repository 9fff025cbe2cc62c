-- Complaints made at WeChat Pay are found by WeChat Pay's id, when its notice or a list names
-- them again.
CREATE INDEX complaints_provider ON complaints (provider_complaint_id) WHERE provider_complaint_id <> '';
