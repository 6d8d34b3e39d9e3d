-- Counts kept by triggers, so `amlc status` and the dashboard read a few rows instead of
-- scanning jobs, samples and predictions (seconds on a store of a million rows), whoever writes.
--
-- Each count table has a view of "moves" whose INSTEAD OF trigger adds a delta to a count row,
-- creating the row when missing; the triggers on the data tables only say what moved.
--
-- INSERT OR REPLACE (the 'extract' jobs of an image read again, every prediction) removes the
-- row it replaces without firing delete triggers unless recursive_triggers is on. So a BEFORE
-- INSERT trigger notes the row an insert collides with, and an AFTER INSERT trigger takes the
-- noted row out of the counts. An insert that was ignored leaves its note behind, harmless:
-- the next insert of that key notes afresh, and updating or deleting the row drops the note.
-- Samples are never replaced (jobs and predictions hold their ids), so theirs need no note.
--
-- No statement here can abort (each is OR IGNORE or OR REPLACE, and the notes may hold NULLs):
-- one that could makes SQLite keep a statement journal for every row an insert touches, which
-- doubled the cost of ingesting test.csv. A missing count row is added guarded by NOT EXISTS,
-- so that the OR REPLACE of an outer statement, which trigger statements inherit, never resets
-- one; an upsert could abort.

-- jobs: rows per stage and state ---------------------------------------------------------------
CREATE TABLE job_counts (
    stage TEXT NOT NULL,
    state TEXT NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (stage, state)
) WITHOUT ROWID;
INSERT INTO job_counts SELECT stage, state, count(*) FROM jobs GROUP BY stage, state;

CREATE VIEW job_count_moves AS SELECT stage, state, n FROM job_counts;
CREATE TRIGGER job_count_moves_add INSTEAD OF INSERT ON job_count_moves BEGIN
    INSERT OR IGNORE INTO job_counts SELECT NEW.stage, NEW.state, 0
        WHERE NOT EXISTS (SELECT 1 FROM job_counts WHERE stage = NEW.stage AND state = NEW.state);
    UPDATE OR IGNORE job_counts SET n = n + NEW.n WHERE stage = NEW.stage AND state = NEW.state;
END;

CREATE TABLE job_replaced (stage TEXT, item_id INTEGER, state TEXT, PRIMARY KEY (stage, item_id));

CREATE TRIGGER job_counts_note BEFORE INSERT ON jobs
WHEN EXISTS (SELECT 1 FROM jobs WHERE stage = NEW.stage AND item_id = NEW.item_id) BEGIN
    INSERT OR REPLACE INTO job_replaced
        SELECT stage, item_id, state FROM jobs WHERE stage = NEW.stage AND item_id = NEW.item_id;
END;

CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    INSERT INTO job_count_moves VALUES (NEW.stage, NEW.state, 1);
END;

CREATE TRIGGER job_counts_replaced AFTER INSERT ON jobs
WHEN EXISTS (SELECT 1 FROM job_replaced WHERE stage = NEW.stage AND item_id = NEW.item_id) BEGIN
    INSERT INTO job_count_moves SELECT stage, state, -1 FROM job_replaced
        WHERE stage = NEW.stage AND item_id = NEW.item_id;
    DELETE FROM job_replaced WHERE stage = NEW.stage AND item_id = NEW.item_id;
END;

CREATE TRIGGER job_counts_update AFTER UPDATE OF stage, item_id, state ON jobs
WHEN OLD.stage IS NOT NEW.stage OR OLD.item_id IS NOT NEW.item_id OR OLD.state IS NOT NEW.state BEGIN
    INSERT INTO job_count_moves VALUES (OLD.stage, OLD.state, -1), (NEW.stage, NEW.state, 1);
    DELETE FROM job_replaced WHERE stage = OLD.stage AND item_id = OLD.item_id;  -- a stale note
END;

CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    INSERT INTO job_count_moves VALUES (OLD.stage, OLD.state, -1);
    DELETE FROM job_replaced WHERE stage = OLD.stage AND item_id = OLD.item_id;
END;

DROP VIEW stage_counts;
CREATE VIEW stage_counts AS SELECT stage, state, n FROM job_counts WHERE n > 0;

-- samples: rows, distinct images and labelled rows per split ------------------------------------
CREATE TABLE split_counts (
    split    TEXT PRIMARY KEY,
    samples  INTEGER NOT NULL,
    images   INTEGER NOT NULL,
    labelled INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO split_counts
    SELECT split, count(*), count(DISTINCT image_id), count(label) FROM samples GROUP BY split;

CREATE VIEW split_count_moves AS SELECT split, samples, images, labelled FROM split_counts;
CREATE TRIGGER split_count_moves_add INSTEAD OF INSERT ON split_count_moves BEGIN
    INSERT OR IGNORE INTO split_counts SELECT NEW.split, 0, 0, 0
        WHERE NOT EXISTS (SELECT 1 FROM split_counts WHERE split = NEW.split);
    UPDATE OR IGNORE split_counts SET samples = samples + NEW.samples, images = images + NEW.images,
        labelled = labelled + NEW.labelled WHERE split = NEW.split;
END;

-- An image counts once per split: the sample that brings it in (or takes its last one out)
-- moves `images`; the other samples of the image are found through the samples_image index.
CREATE TRIGGER split_counts_insert AFTER INSERT ON samples BEGIN
    INSERT INTO split_count_moves VALUES (NEW.split, 1, NOT EXISTS (SELECT 1 FROM samples
        WHERE image_id = NEW.image_id AND split = NEW.split AND id != NEW.id), NEW.label IS NOT NULL);
END;

CREATE TRIGGER split_counts_update AFTER UPDATE OF split, image_id, label ON samples
WHEN OLD.split IS NOT NEW.split OR OLD.image_id IS NOT NEW.image_id OR OLD.label IS NOT NEW.label BEGIN
    INSERT INTO split_count_moves VALUES
        (OLD.split, -1, -NOT EXISTS (SELECT 1 FROM samples
            WHERE image_id = OLD.image_id AND split = OLD.split AND id != OLD.id), -(OLD.label IS NOT NULL)),
        (NEW.split, 1, NOT EXISTS (SELECT 1 FROM samples
            WHERE image_id = NEW.image_id AND split = NEW.split AND id != NEW.id), NEW.label IS NOT NULL);
END;

CREATE TRIGGER split_counts_delete AFTER DELETE ON samples BEGIN
    INSERT INTO split_count_moves VALUES (OLD.split, -1, -NOT EXISTS (SELECT 1 FROM samples
        WHERE image_id = OLD.image_id AND split = OLD.split), -(OLD.label IS NOT NULL));
END;

-- predictions: rows and answers (not blank) per source ------------------------------------------
CREATE TABLE prediction_counts (
    source   TEXT PRIMARY KEY,
    n        INTEGER NOT NULL,
    answered INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO prediction_counts
    SELECT source, count(*), sum(prediction != '') FROM predictions GROUP BY source;

CREATE VIEW prediction_count_moves AS SELECT source, n, answered FROM prediction_counts;
CREATE TRIGGER prediction_count_moves_add INSTEAD OF INSERT ON prediction_count_moves BEGIN
    INSERT OR IGNORE INTO prediction_counts SELECT NEW.source, 0, 0
        WHERE NOT EXISTS (SELECT 1 FROM prediction_counts WHERE source = NEW.source);
    UPDATE OR IGNORE prediction_counts SET n = n + NEW.n, answered = answered + NEW.answered
        WHERE source = NEW.source;
END;

-- `answered` is 1 when the noted row was not blank
CREATE TABLE prediction_replaced (sample_id INTEGER, source TEXT, answered INTEGER,
                                  PRIMARY KEY (sample_id, source));

CREATE TRIGGER prediction_counts_note BEFORE INSERT ON predictions
WHEN EXISTS (SELECT 1 FROM predictions WHERE sample_id = NEW.sample_id AND source = NEW.source) BEGIN
    INSERT OR REPLACE INTO prediction_replaced
        SELECT sample_id, source, prediction != '' FROM predictions
        WHERE sample_id = NEW.sample_id AND source = NEW.source;
END;

CREATE TRIGGER prediction_counts_insert AFTER INSERT ON predictions BEGIN
    INSERT INTO prediction_count_moves VALUES (NEW.source, 1, NEW.prediction != '');
END;

CREATE TRIGGER prediction_counts_replaced AFTER INSERT ON predictions
WHEN EXISTS (SELECT 1 FROM prediction_replaced WHERE sample_id = NEW.sample_id AND source = NEW.source)
BEGIN
    INSERT INTO prediction_count_moves SELECT source, -1, -answered FROM prediction_replaced
        WHERE sample_id = NEW.sample_id AND source = NEW.source;
    DELETE FROM prediction_replaced WHERE sample_id = NEW.sample_id AND source = NEW.source;
END;

CREATE TRIGGER prediction_counts_update AFTER UPDATE OF sample_id, source, prediction ON predictions
WHEN OLD.sample_id IS NOT NEW.sample_id OR OLD.source IS NOT NEW.source
  OR OLD.prediction IS NOT NEW.prediction BEGIN
    INSERT INTO prediction_count_moves VALUES
        (OLD.source, -1, -(OLD.prediction != '')), (NEW.source, 1, NEW.prediction != '');
    DELETE FROM prediction_replaced WHERE sample_id = OLD.sample_id AND source = OLD.source;
END;

CREATE TRIGGER prediction_counts_delete AFTER DELETE ON predictions BEGIN
    INSERT INTO prediction_count_moves VALUES (OLD.source, -1, -(OLD.prediction != ''));
    DELETE FROM prediction_replaced WHERE sample_id = OLD.sample_id AND source = OLD.source;
END;

-- The commonest failures, read by `amlc status`, without scanning every job. `state` is in the
-- key only so that SQLite sees the index covers the query (it would read each row otherwise).
CREATE INDEX jobs_failed ON jobs(stage, last_error, state) WHERE state = 'failed';
