-- The first schema of the amlc store. One row per unique image, one per sample, one job row
-- per (stage, item) carrying the state machine pending -> leased -> done | failed.

CREATE TABLE images (
    id        INTEGER PRIMARY KEY,
    link      TEXT NOT NULL UNIQUE,      -- as in the CSV; duplicate links share this row
    path      TEXT,                      -- content-addressed local file once fetched
    sha256    TEXT,
    width     INTEGER,
    height    INTEGER,
    size      INTEGER                    -- bytes
);

CREATE TABLE samples (
    id          INTEGER PRIMARY KEY,
    split       TEXT NOT NULL,           -- 'test', 'train', 'val', ...
    idx         INTEGER NOT NULL,        -- the CSV's index column, or the data row number for train.csv
    image_id    INTEGER NOT NULL REFERENCES images(id),
    group_id    TEXT NOT NULL,
    entity      TEXT NOT NULL,
    label       TEXT,                    -- canonical '<number> <unit>'; NULL when unlabelled or unusable
    raw_label   TEXT,                    -- the label as written in the file
    label_error TEXT,                    -- why raw_label could not become a label
    UNIQUE (split, idx)
);
CREATE INDEX samples_image ON samples(image_id);

-- Rows of an input file that could not become samples, with their line number and reason.
CREATE TABLE rejects (
    split   TEXT NOT NULL,
    source  TEXT NOT NULL,               -- the file's name
    line    INTEGER NOT NULL,            -- 1-based line in the file (the header is line 1)
    reason  TEXT NOT NULL,
    raw     TEXT NOT NULL,
    PRIMARY KEY (split, source, line)
);

-- Work per stage. item_id is an image id for 'fetch'/'ocr' and a sample id for later stages.
CREATE TABLE jobs (
    stage       TEXT NOT NULL,
    item_id     INTEGER NOT NULL,
    state       TEXT NOT NULL DEFAULT 'pending'
                CHECK (state IN ('pending', 'leased', 'done', 'failed')),
    attempts    INTEGER NOT NULL DEFAULT 0,
    last_error  TEXT,
    lease_until REAL,                    -- unix time; a leased job past it belongs to a dead worker
    not_before  REAL,                    -- unix time before which a retried job is not claimed
    updated_at  REAL,
    PRIMARY KEY (stage, item_id)
) WITHOUT ROWID;
CREATE INDEX jobs_claim ON jobs(stage, state, item_id);

CREATE TABLE ocr_results (
    image_id   INTEGER NOT NULL REFERENCES images(id),
    engine     TEXT NOT NULL,
    lines      TEXT NOT NULL,            -- OcrResult JSON: lines of {text, confidence, box}
    text       TEXT NOT NULL,            -- lines joined by newlines, for reading and prompts
    preprocess TEXT NOT NULL,            -- JSON of the preprocessing applied
    seconds    REAL,
    created_at REAL NOT NULL,
    PRIMARY KEY (image_id, engine)
);

CREATE TABLE runs (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,           -- 'ingest', 'run', 'train', 'predict', 'eval', ...
    config      TEXT NOT NULL DEFAULT '{}',  -- JSON
    metrics     TEXT NOT NULL DEFAULT '{}',  -- JSON
    status      TEXT NOT NULL DEFAULT 'running',
    started_at  REAL NOT NULL,
    finished_at REAL
);

CREATE TABLE predictions (
    sample_id  INTEGER NOT NULL REFERENCES samples(id),
    source     TEXT NOT NULL,            -- 'rules' or a model name
    run_id     INTEGER REFERENCES runs(id),
    prediction TEXT NOT NULL,            -- '' is an abstention
    confidence REAL,
    created_at REAL NOT NULL,
    PRIMARY KEY (sample_id, source)
);

-- Work flows by triggers, so every writer keeps the invariants: a new image needs fetching,
-- a fetched image needs OCR, an OCR'd image's samples need extraction.
CREATE TRIGGER image_needs_fetch AFTER INSERT ON images BEGIN
    INSERT OR IGNORE INTO jobs(stage, item_id) VALUES ('fetch', NEW.id);
END;

CREATE TRIGGER fetched_needs_ocr AFTER UPDATE OF state ON jobs
WHEN NEW.stage = 'fetch' AND NEW.state = 'done' BEGIN
    INSERT OR IGNORE INTO jobs(stage, item_id) VALUES ('ocr', NEW.item_id);
END;

CREATE TRIGGER ocred_needs_extract AFTER UPDATE OF state ON jobs
WHEN NEW.stage = 'ocr' AND NEW.state = 'done' BEGIN
    INSERT OR IGNORE INTO jobs(stage, item_id)
        SELECT 'extract', id FROM samples WHERE image_id = NEW.item_id;
END;

CREATE TRIGGER sample_needs_extract AFTER INSERT ON samples
WHEN EXISTS (SELECT 1 FROM jobs WHERE stage = 'ocr' AND item_id = NEW.image_id AND state = 'done')
BEGIN
    INSERT OR IGNORE INTO jobs(stage, item_id) VALUES ('extract', NEW.id);
END;

-- One line per sample: where it stands and its best answer so far.
CREATE VIEW sample_status AS
SELECT s.split, s.idx, s.entity, s.group_id, s.label, i.link,
       f.state AS fetch_state, o.state AS ocr_state, e.state AS extract_state,
       coalesce(e.last_error, o.last_error, f.last_error) AS last_error,
       (SELECT p.prediction FROM predictions p WHERE p.sample_id = s.id
        ORDER BY p.source = 'rules', p.created_at DESC LIMIT 1) AS prediction
FROM samples s
JOIN images i ON i.id = s.image_id
LEFT JOIN jobs f ON f.stage = 'fetch' AND f.item_id = s.image_id
LEFT JOIN jobs o ON o.stage = 'ocr' AND o.item_id = s.image_id
LEFT JOIN jobs e ON e.stage = 'extract' AND e.item_id = s.id;

-- Counts per stage and state, what `amlc status` shows.
CREATE VIEW stage_counts AS
SELECT stage, state, count(*) AS n FROM jobs GROUP BY stage, state;
