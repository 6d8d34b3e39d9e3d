-- How a prediction came about, as JSON: e.g. {"model": "smollm2-q8_0", "fallback": "rules"}
-- when the model abstained and the rules' answer was kept. NULL for plain rule answers.
ALTER TABLE predictions ADD COLUMN detail TEXT;
