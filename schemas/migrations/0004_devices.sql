-- MQTT devices, version 4. Additions only; earlier migrations are unchanged.
--
-- Commands, twins and presence of devices (pubsub-mqtt/, docs/devices.md). Server -> device
-- messages go through converge.outbox (written by the C++ API in pubsub-mqtt in the caller's
-- transaction); device -> server messages are ingested by consumer-runtime handlers that change
-- these rows in the same transaction as the inbox row. Every decision uses the database clock.

-- A device id is also an MQTT topic level and part of outbox topics: 1-64 of A-Z a-z 0-9 . _ -
-- (no '/', '+', '#', '$', spaces) and not "." or "..".
CREATE FUNCTION converge.valid_device_id(p text) RETURNS boolean
  LANGUAGE sql IMMUTABLE AS
$$ SELECT p ~ '^[A-Za-z0-9._-]{1,64}$' AND p NOT IN ('.', '..') $$;

-- One command to one device. Lifecycle (forward only, enforced by the trigger below):
--   pending  -> sent -> received -> applied | rejected
--   pending | sent | received -> expired   (expires_at passed before a final ack)
-- pending:  enqueued in the outbox, not yet published by the relay.
-- sent:     the outbox row is gone (the relay confirmed it), or any ack arrived.
-- received: the device acknowledged delivery; applied/rejected: the device's final answer.
CREATE TABLE converge.device_commands (
  id            uuid        PRIMARY KEY,      -- = outbox message id = MQTT correlation data
  device_id     text        NOT NULL CHECK (converge.valid_device_id(device_id)),
  name          text        NOT NULL CHECK (length(name) BETWEEN 1 AND 256),
  payload       bytea       NOT NULL DEFAULT '',
  content_type  text        NOT NULL DEFAULT 'application/json',
  status        text        NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'sent', 'received', 'applied', 'rejected', 'expired')),
  created_at    timestamptz NOT NULL DEFAULT now(),
  expires_at    timestamptz NOT NULL,
  attempts      integer     NOT NULL DEFAULT 1,  -- times written to the outbox
  last_sent_at  timestamptz NOT NULL DEFAULT now(),  -- last write to the outbox
  resend_due    boolean     NOT NULL DEFAULT false,  -- the device came online: re-send now
  sent_at       timestamptz,
  received_at   timestamptz,
  acked_at      timestamptz,                    -- the device's final ack (applied/rejected)
  finished_at   timestamptz,                    -- applied, rejected or expired
  result        text,                           -- the device's detail / rejection reason
  CHECK (expires_at > created_at)
);
CREATE INDEX device_commands_open ON converge.device_commands (device_id, created_at)
  WHERE status IN ('pending', 'sent', 'received');
CREATE INDEX device_commands_expiry ON converge.device_commands (expires_at)
  WHERE status IN ('pending', 'sent', 'received');

CREATE FUNCTION converge.device_command_rank(s text) RETURNS integer
  LANGUAGE sql IMMUTABLE AS
$$ SELECT CASE s WHEN 'pending' THEN 0 WHEN 'sent' THEN 1 WHEN 'received' THEN 2 ELSE 3 END $$;

-- Forward only: a status never moves to a lower rank, and a final status never changes.
-- Raises SQLSTATE 55000 (object_not_in_prerequisite_state).
CREATE FUNCTION converge.device_commands_guard() RETURNS trigger
  LANGUAGE plpgsql AS
$$
BEGIN
  IF NEW.status IS DISTINCT FROM OLD.status AND
     (converge.device_command_rank(OLD.status) = 3 OR
      converge.device_command_rank(NEW.status) < converge.device_command_rank(OLD.status)) THEN
    RAISE EXCEPTION 'converge: device command % is % and cannot become %',
      OLD.id, OLD.status, NEW.status USING ERRCODE = '55000';
  END IF;
  RETURN NEW;
END
$$;
CREATE TRIGGER device_commands_forward_only BEFORE UPDATE ON converge.device_commands
  FOR EACH ROW EXECUTE FUNCTION converge.device_commands_guard();

-- The twin of a device. desired_version grows by one per desired change (SetDesired);
-- reported_version is the device's own counter (a report with a version not above the stored
-- one is ignored); applied_desired_version is the desired version the device says it applied
-- (never above desired_version, never decreasing). Converged: applied_desired_version >=
-- desired_version.
CREATE TABLE converge.device_twins (
  device_id               text        PRIMARY KEY CHECK (converge.valid_device_id(device_id)),
  desired                 jsonb       NOT NULL DEFAULT '{}',
  desired_version         bigint      NOT NULL DEFAULT 0 CHECK (desired_version >= 0),
  desired_at              timestamptz NOT NULL DEFAULT now(),  -- last desired change
  desired_sent_at         timestamptz,                         -- last write to the outbox
  desired_resends         integer     NOT NULL DEFAULT 0,      -- sweep re-sends
  reported                jsonb,
  reported_version        bigint      NOT NULL DEFAULT 0 CHECK (reported_version >= 0),
  applied_desired_version bigint      NOT NULL DEFAULT 0 CHECK (applied_desired_version >= 0),
  reported_at             timestamptz,
  CHECK (applied_desired_version <= desired_version)
);
CREATE INDEX device_twins_unconverged ON converge.device_twins (desired_at)
  WHERE applied_desired_version < desired_version;

-- Presence from the devices' retained presence messages and last wills. `connection` is the
-- device's connection counter (it grows with every connect, also across reboots); a message
-- with a lower counter than the stored one is stale (e.g. the will of an earlier connection
-- delivered after the device reconnected) and is ignored.
CREATE TABLE converge.device_presence (
  device_id   text        PRIMARY KEY CHECK (converge.valid_device_id(device_id)),
  state       text        NOT NULL CHECK (state IN ('online', 'offline')),
  connection  bigint      NOT NULL CHECK (connection >= 0),
  changed_at  timestamptz NOT NULL DEFAULT now()
);
