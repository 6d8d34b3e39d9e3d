-- A model's answer is made from its sample's OCR text and the rules' candidates. When the
-- sample is answered again by the rules (its image read anew, another OCR engine, another
-- ranker), every model's answer to it is out of date: its predict jobs become pending again,
-- with a fresh budget. The predict stages are found in job_counts (a row per stage and state),
-- so the update is a few index seeks per sample, not a scan of the jobs. Each statement is
-- OR IGNORE: none can abort (see 0004_counts.sql on why that matters).
CREATE TRIGGER extracted_needs_predict_again AFTER UPDATE OF state ON jobs
WHEN NEW.stage = 'extract' AND NEW.state = 'done' AND OLD.state IS NOT 'done' BEGIN
    UPDATE OR IGNORE jobs
    SET state = 'pending', attempts = 0, last_error = NULL, not_before = NULL, started_at = NULL
    WHERE item_id = NEW.item_id AND state IN ('done', 'failed') AND stage IN (
        SELECT stage FROM job_counts WHERE stage >= 'predict:' AND stage < 'predict;' AND n > 0);
END;
