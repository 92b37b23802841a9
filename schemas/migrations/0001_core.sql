-- Converge core schema, version 1.
-- Every Converge table lives in the `converge` schema. This file is applied once, inside one
-- transaction, by `convergectl migrate`; its checksum is recorded and it must never change
-- after release (add a new numbered file instead). docs/schema.md explains every table.

CREATE SCHEMA IF NOT EXISTS converge;

-- ---------------------------------------------------------------------------------------------
-- Helpers
-- ---------------------------------------------------------------------------------------------

-- Keys map to a fixed number of hash slots; relays lease slots, never individual keys.
-- The number is part of the on-disk format: changing it would move keys between slots.
CREATE FUNCTION converge.slot_count() RETURNS integer
  LANGUAGE sql IMMUTABLE PARALLEL SAFE AS 'SELECT 256';

-- The slot of an ordering key. hashtextextended is the function PostgreSQL's own hash
-- partitioning persists on disk, so it is stable across releases.
CREATE FUNCTION converge.key_slot(p_key text) RETURNS smallint
  LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
  $$ SELECT ((hashtextextended(p_key, 0) & 2147483647) % 256)::smallint $$;

-- A time-ordered UUID (RFC 9562 version 7) from the database clock.
CREATE FUNCTION converge.uuid_v7() RETURNS uuid
  LANGUAGE sql VOLATILE PARALLEL SAFE AS
$$
  SELECT encode(
           set_bit(set_bit(
             overlay(uuid_send(gen_random_uuid())
                     PLACING substring(int8send((extract(epoch FROM clock_timestamp()) * 1000)::bigint)
                                       FROM 3)
                     FROM 1 FOR 6),
             52, 1), 53, 1),
           'hex')::uuid
$$;

-- ---------------------------------------------------------------------------------------------
-- Outbox
-- ---------------------------------------------------------------------------------------------

-- One row per ordering stream (topic, key): the last sequence number handed out. The row lock
-- taken by enqueue serializes writers of the same key until they commit, which is what makes
-- `seq` order equal commit order within a key: a later row of a key can never become visible
-- before an earlier one.
CREATE TABLE converge.outbox_keys (
  topic    text   NOT NULL,
  key      text   NOT NULL,
  last_seq bigint NOT NULL,
  PRIMARY KEY (topic, key)
);

-- Committed, not yet published messages. A row is deleted by the relay in the transaction that
-- follows the broker's confirmation; a published message is never kept here.
CREATE TABLE converge.outbox (
  id           bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- insertion order
  message_id   uuid        NOT NULL,          -- CloudEvents id (UUIDv7)
  topic        text        NOT NULL,
  key          text        NOT NULL,          -- CloudEvents subject, Kafka key
  seq          bigint      NOT NULL,          -- per (topic, key): 1, 2, 3 ...
  slot         smallint    NOT NULL,          -- converge.key_slot(key)
  type         text        NOT NULL,
  source       text        NOT NULL,
  payload      bytea       NOT NULL,
  headers      jsonb       NOT NULL DEFAULT '{}',
  content_type text        NOT NULL DEFAULT 'application/json',
  traceparent  text,
  created_at   timestamptz NOT NULL DEFAULT clock_timestamp(),
  expires_at   timestamptz,                   -- optional deadline (MQTT message expiry)
  attempts     integer     NOT NULL DEFAULT 0,
  last_error   text,
  CONSTRAINT outbox_message_id_unique UNIQUE (message_id),
  CONSTRAINT outbox_seq_positive CHECK (seq > 0),
  CONSTRAINT outbox_slot_range CHECK (slot >= 0 AND slot < 256),
  CONSTRAINT outbox_payload_size CHECK (octet_length(payload) <= 1000000)
) WITH (
  -- A queue table: rows are inserted and deleted at a high rate. Vacuum it early and often so
  -- dead tuples do not pile up; see docs/schema.md "Bloat".
  autovacuum_vacuum_scale_factor = 0.0,
  autovacuum_vacuum_threshold = 2000,
  autovacuum_vacuum_insert_scale_factor = 0.0,
  autovacuum_vacuum_insert_threshold = 10000,
  autovacuum_vacuum_cost_delay = 0,
  autovacuum_analyze_scale_factor = 0.0,
  autovacuum_analyze_threshold = 5000
);

-- Keys that must not be published for now: a key whose head row failed waits until
-- `blocked_until` (retry backoff), a parked key (its head row was dead-lettered) waits for an
-- operator (`convergectl dlq replay|discard`, `convergectl keys unpark`). Later rows of such a
-- key stay in the outbox, so per-key order survives failures, relay restarts and takeovers.
CREATE TABLE converge.outbox_blocked_keys (
  topic         text        NOT NULL,
  key           text        NOT NULL,
  parked        boolean     NOT NULL DEFAULT false,
  blocked_until timestamptz,                  -- for retry backoff; NULL when parked
  reason        text        NOT NULL,
  message_id    uuid,                         -- the head message that failed
  since         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (topic, key)
);

-- Relay leases. Slot s is owned by at most one live relay: `owner` with `lease_until` in the
-- future (database clock). `epoch` grows on every change of owner; a relay acts on a slot
-- only while (owner, epoch) still match, so a paused relay that lost a slot is fenced out.
CREATE TABLE converge.relay_slots (
  slot        smallint    PRIMARY KEY CHECK (slot >= 0 AND slot < 256),
  owner       text,
  epoch       bigint      NOT NULL DEFAULT 0,
  lease_until timestamptz
);
INSERT INTO converge.relay_slots (slot) SELECT generate_series(0, 255);

-- Live relay processes, for balancing slots between them and for `convergectl status`.
CREATE TABLE converge.relay_instances (
  instance_id  text        PRIMARY KEY,
  hostname     text        NOT NULL,
  pid          integer     NOT NULL,
  started_at   timestamptz NOT NULL DEFAULT now(),
  heartbeat_at timestamptz NOT NULL DEFAULT now(),
  lease_until  timestamptz NOT NULL
);

-- ---------------------------------------------------------------------------------------------
-- Consumer runtime
-- ---------------------------------------------------------------------------------------------

-- Dedupe records: a message's effect was committed by this consumer group. Written in the same
-- transaction as the handler's work and the offset. payload_hash detects "same id, different
-- payload" (a conflict, never silently skipped).
CREATE TABLE converge.inbox (
  consumer_group text        NOT NULL,
  message_id     uuid        NOT NULL,
  payload_hash   bytea       NOT NULL,        -- sha256(type || 0x00 || payload)
  topic          text        NOT NULL,
  partition      integer     NOT NULL,
  "offset"       bigint      NOT NULL,
  processed_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, message_id)
);
-- Pruning walks this index: rows older than the retention window and below the watermark.
CREATE INDEX inbox_prune ON converge.inbox (consumer_group, processed_at);

-- The broker position of each (group, topic, partition): the next offset to read. Only the
-- member that owns the partition (owner, epoch) may move it, and only forward.
CREATE TABLE converge.consumer_offsets (
  consumer_group text        NOT NULL,
  topic          text        NOT NULL,
  partition      integer     NOT NULL,
  next_offset    bigint      NOT NULL DEFAULT 0,
  owner          text,
  epoch          bigint      NOT NULL DEFAULT 0,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, partition),
  CONSTRAINT consumer_offsets_nonnegative CHECK (next_offset >= 0)
);

-- The last applied per-key sequence number per group, for gap and staleness detection.
CREATE TABLE converge.consumer_key_seq (
  consumer_group text   NOT NULL,
  topic          text   NOT NULL,
  key            text   NOT NULL,
  last_seq       bigint NOT NULL,
  updated_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (consumer_group, topic, key)
);

-- ---------------------------------------------------------------------------------------------
-- Dead letters (relay and consumers)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE converge.dead_letters (
  id             bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  origin         text        NOT NULL CHECK (origin IN ('relay', 'consumer')),
  consumer_group text,                        -- set when origin = 'consumer'
  outbox_id      bigint,                      -- relay: the row's outbox id, reused on replay
                                              -- so the message keeps its place in its key
  message_id     uuid,                        -- NULL when the record had no decodable id
  topic          text        NOT NULL,
  key            text,
  seq            bigint,
  type           text,
  source         text,
  payload        bytea,
  headers        jsonb       NOT NULL DEFAULT '{}',
  content_type   text,
  traceparent    text,
  created_at     timestamptz,                 -- when the message was first enqueued
  expires_at     timestamptz,
  partition      integer,                     -- consumer: where it was read
  "offset"       bigint,
  reason         text        NOT NULL,        -- human-readable: why it can never succeed
  error_code     text        NOT NULL,        -- machine-readable: too_large, not_authorized ...
  attempts       integer     NOT NULL DEFAULT 0,
  failed_at      timestamptz NOT NULL DEFAULT now(),
  status         text        NOT NULL DEFAULT 'open'
                 CHECK (status IN ('open', 'replayed', 'discarded')),
  resolved_at    timestamptz,
  resolved_by    text
);
CREATE INDEX dead_letters_open ON converge.dead_letters (failed_at) WHERE status = 'open';
CREATE INDEX dead_letters_message ON converge.dead_letters (message_id);

-- ---------------------------------------------------------------------------------------------
-- Flows (multi-step business processes, driven by consumers and the reconciler)
-- ---------------------------------------------------------------------------------------------

CREATE TABLE converge.flows (
  flow_id       uuid        PRIMARY KEY,
  flow_type     text        NOT NULL,
  business_key  text        NOT NULL,
  state         text        NOT NULL DEFAULT 'running'
                CHECK (state IN ('running', 'completed', 'compensating', 'compensated',
                                 'needs_attention')),
  step          integer     NOT NULL DEFAULT 0,     -- index of the current step
  step_name     text        NOT NULL,
  attempts      integer     NOT NULL DEFAULT 0,     -- attempts of the current step
  deadline_at   timestamptz,                        -- database clock
  last_error    text,
  data          jsonb       NOT NULL DEFAULT '{}',
  version       bigint      NOT NULL DEFAULT 0,     -- optimistic concurrency
  created_at    timestamptz NOT NULL DEFAULT now(),
  updated_at    timestamptz NOT NULL DEFAULT now(),
  finished_at   timestamptz,
  UNIQUE (flow_type, business_key)
);
CREATE INDEX flows_due ON converge.flows (deadline_at) WHERE state IN ('running', 'compensating');

CREATE TABLE converge.flow_history (
  id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  flow_id    uuid        NOT NULL REFERENCES converge.flows (flow_id) ON DELETE CASCADE,
  at         timestamptz NOT NULL DEFAULT now(),
  step       integer     NOT NULL,
  step_name  text        NOT NULL,
  event      text        NOT NULL,   -- started, emitted, completed, retried, compensated ...
  message_id uuid,
  detail     text
);
CREATE INDEX flow_history_flow ON converge.flow_history (flow_id, id);

-- ---------------------------------------------------------------------------------------------
-- Operator audit log: every repair done through convergectl.
-- ---------------------------------------------------------------------------------------------

CREATE TABLE converge.audit_log (
  id       bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  at       timestamptz NOT NULL DEFAULT now(),
  actor    text        NOT NULL,     -- OS user @ host, or --actor
  action   text        NOT NULL,     -- e.g. dlq.replay, keys.unpark, flows.compensate
  target   text        NOT NULL,     -- what was acted on
  reason   text        NOT NULL,
  dry_run  boolean     NOT NULL DEFAULT false,
  details  jsonb       NOT NULL DEFAULT '{}'
);

-- ---------------------------------------------------------------------------------------------
-- Enqueue: the language-neutral way to write an outbox row inside the caller's transaction.
-- ---------------------------------------------------------------------------------------------

-- Raises SQLSTATE 22023 (invalid_parameter_value) with a message naming the bad argument.
CREATE FUNCTION converge.validate_message(p_topic text, p_key text, p_type text,
                                          p_payload bytea, p_headers jsonb, p_source text,
                                          p_content_type text, p_traceparent text)
  RETURNS void LANGUAGE plpgsql IMMUTABLE AS
$$
DECLARE
  h record;
  n integer := 0;
BEGIN
  IF p_topic IS NULL OR p_topic = '' THEN
    RAISE EXCEPTION 'converge.enqueue: topic must not be empty' USING ERRCODE = '22023';
  END IF;
  IF octet_length(p_topic) > 249 THEN
    RAISE EXCEPTION 'converge.enqueue: topic is % bytes, the limit is 249', octet_length(p_topic)
      USING ERRCODE = '22023';
  END IF;
  IF p_topic !~ '^[A-Za-z0-9._/-]+$' THEN
    RAISE EXCEPTION 'converge.enqueue: topic "%" may only contain letters, digits, ".", "_", "-" and "/"', p_topic
      USING ERRCODE = '22023';
  END IF;
  IF p_key IS NULL OR p_key = '' THEN
    RAISE EXCEPTION 'converge.enqueue: key must not be empty (it is the ordering key)' USING ERRCODE = '22023';
  END IF;
  IF octet_length(p_key) > 1024 THEN
    RAISE EXCEPTION 'converge.enqueue: key is % bytes, the limit is 1024', octet_length(p_key)
      USING ERRCODE = '22023';
  END IF;
  IF p_type IS NULL OR p_type = '' THEN
    RAISE EXCEPTION 'converge.enqueue: type must not be empty' USING ERRCODE = '22023';
  END IF;
  IF octet_length(p_type) > 256 THEN
    RAISE EXCEPTION 'converge.enqueue: type is % bytes, the limit is 256', octet_length(p_type)
      USING ERRCODE = '22023';
  END IF;
  IF p_payload IS NULL THEN
    RAISE EXCEPTION 'converge.enqueue: payload must not be NULL' USING ERRCODE = '22023';
  END IF;
  IF octet_length(p_payload) > 1000000 THEN
    RAISE EXCEPTION 'converge.enqueue: payload is % bytes, the limit is 1000000', octet_length(p_payload)
      USING ERRCODE = '22023';
  END IF;
  IF p_source IS NULL OR p_source = '' OR octet_length(p_source) > 1024 THEN
    RAISE EXCEPTION 'converge.enqueue: source must be 1 to 1024 bytes' USING ERRCODE = '22023';
  END IF;
  IF p_content_type IS NULL OR p_content_type = '' OR octet_length(p_content_type) > 256 THEN
    RAISE EXCEPTION 'converge.enqueue: content_type must be 1 to 256 bytes' USING ERRCODE = '22023';
  END IF;
  IF p_traceparent IS NOT NULL AND p_traceparent !~ '^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$' THEN
    RAISE EXCEPTION 'converge.enqueue: traceparent "%" is not a W3C traceparent', p_traceparent
      USING ERRCODE = '22023';
  END IF;
  IF p_headers IS NULL OR jsonb_typeof(p_headers) <> 'object' THEN
    RAISE EXCEPTION 'converge.enqueue: headers must be a JSON object of strings' USING ERRCODE = '22023';
  END IF;
  FOR h IN SELECT * FROM jsonb_each(p_headers) LOOP
    n := n + 1;
    IF n > 64 THEN
      RAISE EXCEPTION 'converge.enqueue: more than 64 headers' USING ERRCODE = '22023';
    END IF;
    IF h.key !~ '^[A-Za-z0-9._-]{1,128}$' THEN
      RAISE EXCEPTION 'converge.enqueue: header name "%" must be 1 to 128 letters, digits, ".", "_" or "-"', h.key
        USING ERRCODE = '22023';
    END IF;
    IF lower(h.key) LIKE 'ce\_%' OR lower(h.key) = 'content-type' THEN
      RAISE EXCEPTION 'converge.enqueue: header name "%" is reserved for the CloudEvents envelope', h.key
        USING ERRCODE = '22023';
    END IF;
    IF jsonb_typeof(h.value) <> 'string' THEN
      RAISE EXCEPTION 'converge.enqueue: header "%" must be a string', h.key USING ERRCODE = '22023';
    END IF;
    IF octet_length(h.value #>> '{}') > 1024 THEN
      RAISE EXCEPTION 'converge.enqueue: header "%" is longer than 1024 bytes', h.key USING ERRCODE = '22023';
    END IF;
  END LOOP;
END
$$;

-- Writes one outbox row and returns its message id and per-key sequence number. Call it
-- inside the transaction that writes the business rows: both commit or neither does. Writers
-- of the same (topic, key) wait for each other's commit here (see converge.outbox_keys).
CREATE FUNCTION converge.enqueue_message(p_topic text, p_key text, p_type text, p_payload bytea,
                                         p_headers jsonb, p_content_type text, p_source text,
                                         p_traceparent text, p_message_id uuid,
                                         p_expires_at timestamptz,
                                         OUT message_id uuid, OUT seq bigint)
  LANGUAGE plpgsql VOLATILE AS
$$
DECLARE
  v_source text := coalesce(p_source, nullif(current_setting('converge.source', true), ''),
                            '/' || current_database());
BEGIN
  message_id := coalesce(p_message_id, converge.uuid_v7());
  PERFORM converge.validate_message(p_topic, p_key, p_type, p_payload, coalesce(p_headers, '{}'),
                                    v_source, p_content_type, p_traceparent);
  INSERT INTO converge.outbox_keys AS k (topic, key, last_seq) VALUES (p_topic, p_key, 1)
    ON CONFLICT (topic, key) DO UPDATE SET last_seq = k.last_seq + 1
    RETURNING k.last_seq INTO seq;
  INSERT INTO converge.outbox (message_id, topic, key, seq, slot, type, source, payload, headers,
                               content_type, traceparent, expires_at)
    VALUES (message_id, p_topic, p_key, seq, converge.key_slot(p_key), p_type, v_source,
            p_payload, coalesce(p_headers, '{}'), p_content_type, p_traceparent, p_expires_at);
  -- A wake-up hint for relays (one per transaction: identical notifications are folded).
  -- Relays also poll, so a lost notification only adds latency.
  PERFORM pg_notify('converge_outbox', '');
END
$$;

-- Bytes flavour: any payload, any content type.
CREATE FUNCTION converge.enqueue_raw(p_topic text, p_key text, p_type text, p_payload bytea,
                                     p_headers jsonb DEFAULT '{}',
                                     p_content_type text DEFAULT 'application/octet-stream',
                                     p_source text DEFAULT NULL,
                                     p_traceparent text DEFAULT NULL,
                                     p_message_id uuid DEFAULT NULL,
                                     p_expires_at timestamptz DEFAULT NULL)
  RETURNS uuid LANGUAGE sql VOLATILE AS
$$
  SELECT (converge.enqueue_message(p_topic, p_key, p_type, p_payload, p_headers, p_content_type,
                                   p_source, p_traceparent, p_message_id, p_expires_at)).message_id
$$;

-- The JSON flavour most services use from SQL:
--   SELECT converge.enqueue('orders', 'order-42', 'order.placed', '{"total": 12}');
CREATE FUNCTION converge.enqueue(p_topic text, p_key text, p_type text, p_payload jsonb,
                                 p_headers jsonb DEFAULT '{}',
                                 p_source text DEFAULT NULL,
                                 p_traceparent text DEFAULT NULL,
                                 p_message_id uuid DEFAULT NULL,
                                 p_expires_at timestamptz DEFAULT NULL)
  RETURNS uuid LANGUAGE sql VOLATILE AS
$$
  SELECT converge.enqueue_raw(p_topic, p_key, p_type,
                              convert_to(p_payload::text, 'UTF8'), p_headers,
                              'application/json', p_source, p_traceparent, p_message_id,
                              p_expires_at)
$$;
