-- Who is the active master when several share this database, and the fencing epoch every write
-- transaction checks (store/postgres/election.rs). One row; epoch 0 means nobody has led yet.
CREATE TABLE leadership (
    id        SMALLINT PRIMARY KEY CHECK (id = 1),
    epoch     BIGINT NOT NULL,
    holder    TEXT NOT NULL,
    since_ms  BIGINT NOT NULL
);

INSERT INTO leadership (id, epoch, holder, since_ms) VALUES (1, 0, '', 0);
