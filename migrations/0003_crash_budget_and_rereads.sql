-- When a leased job's work began, committed before it began: at the next start a lease that
-- began counts as a try that killed its process (its budget shrinks), while one still queued
-- at a kill or a clean stop goes back untouched.
ALTER TABLE jobs ADD COLUMN started_at REAL;

-- A new OCR reading of an image (another engine, or the file fetched again) makes its samples'
-- answers stale: extract them again instead of keeping a done job from the old text.
DROP TRIGGER ocred_needs_extract;
CREATE TRIGGER ocred_needs_extract AFTER UPDATE OF state ON jobs
WHEN NEW.stage = 'ocr' AND NEW.state = 'done' BEGIN
    INSERT OR REPLACE INTO jobs(stage, item_id)
        SELECT 'extract', id FROM samples WHERE image_id = NEW.item_id;
END;
