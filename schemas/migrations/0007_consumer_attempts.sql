-- Consumer runtime, version 7: attempt counts that survive a crash. Additions only.
--
-- A message whose handler crashes the process (or whose consumer is killed during it) never
-- finishes an attempt, so an in-memory count restarts at zero with every process and the
-- message loops forever. The runtime records attempts here, outside the batch transaction
-- where it must (so that the record survives the transaction's death), and dead-letters the
-- message after consumer.max_attempts (consumer-runtime/README.md "Attempts across restarts").
--
-- A row is one of:
--   * a record's attempts: attempts > 0, last_error the last failure (or "did not finish");
--   * a batch marker: attempts = 0, batch_end set. Written before the first batch after a
--     partition is claimed; a marker still present at the next claim means that batch never
--     committed, so its records are then run one per transaction, each attempt counted first.
-- Rows below the partition's committed offset are deleted by the batch that passes them.
CREATE TABLE converge.consumer_attempts (
  consumer_group text        NOT NULL,
  topic          text        NOT NULL,
  partition      integer     NOT NULL,
  "offset"       bigint      NOT NULL,
  attempts       integer     NOT NULL DEFAULT 0,
  batch_end      bigint,
  last_error     text,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition, "offset")
);

GRANT SELECT, INSERT, UPDATE, DELETE ON converge.consumer_attempts TO converge_consumer;
