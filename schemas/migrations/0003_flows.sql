-- Flows, version 3. Additions only; 0001 and 0002 are unchanged.
--
-- A flow is a multi-step business process (order placed -> stock reserved -> paid -> shipped).
-- Its definition lives in converge.flow_types, its state in converge.flows (0001) and every
-- transition in converge.flow_history. All transitions are the functions below: they lock the
-- flow's row, decide with the database clock (now()) and write the state change, the history
-- and the emitted messages (through converge.enqueue) in the caller's transaction. docs/flows.md
-- explains the model; reconciler/README.md the process that drives deadlines.

-- The registered flow types. `definition` is the JSON written by the C++ API
-- (converge::flows::FlowType::ToJson) or by hand:
--   {"steps": [{"name": "reserve", "topic": "stock", "command": "stock.reserve",
--               "reply": "stock.reserved", "compensation": "stock.release",
--               "compensation_topic": "stock", "confirm": "stock.confirm",
--               "confirm_topic": "stock", "deadline_ms": 30000, "max_attempts": 3}, ...],
--    "compensation_deadline_ms": 30000, "compensation_max_attempts": 5}
CREATE TABLE converge.flow_types (
  flow_type   text        PRIMARY KEY,
  definition  jsonb       NOT NULL CHECK (jsonb_typeof(definition -> 'steps') = 'array'
                                          AND jsonb_array_length(definition -> 'steps') > 0),
  updated_at  timestamptz NOT NULL DEFAULT now()
);

-- When compensation began. Once set it never changes, and a flow that has it can never be
-- completed: this column is what makes "completed XOR compensated" checkable by the trigger.
ALTER TABLE converge.flows ADD COLUMN compensation_started_at timestamptz;
CREATE INDEX flows_state ON converge.flows (state, updated_at);

-- The rules every writer of converge.flows obeys (the functions below, convergectl, a
-- hand-written UPDATE): completed and compensated are final; a flow that started compensating
-- can never become completed; compensating/compensated need compensation_started_at. Raises
-- SQLSTATE 55000 (object_not_in_prerequisite_state). Also bumps version and updated_at.
CREATE FUNCTION converge.flows_guard() RETURNS trigger
  LANGUAGE plpgsql AS
$$
BEGIN
  IF OLD.state IN ('completed', 'compensated') AND NEW.state IS DISTINCT FROM OLD.state THEN
    RAISE EXCEPTION 'converge: flow % is % (a final state) and cannot become %',
      OLD.flow_id, OLD.state, NEW.state USING ERRCODE = '55000';
  END IF;
  IF OLD.compensation_started_at IS NOT NULL
     AND NEW.compensation_started_at IS DISTINCT FROM OLD.compensation_started_at THEN
    RAISE EXCEPTION 'converge: flow % started compensating at %; that cannot be undone',
      OLD.flow_id, OLD.compensation_started_at USING ERRCODE = '55000';
  END IF;
  IF NEW.state = 'completed' AND NEW.compensation_started_at IS NOT NULL THEN
    RAISE EXCEPTION 'converge: flow % started compensating at %; it can never complete',
      OLD.flow_id, NEW.compensation_started_at USING ERRCODE = '55000';
  END IF;
  IF NEW.state IN ('compensating', 'compensated') AND NEW.compensation_started_at IS NULL THEN
    RAISE EXCEPTION 'converge: flow % cannot be % without compensation_started_at',
      OLD.flow_id, NEW.state USING ERRCODE = '55000';
  END IF;
  NEW.version := OLD.version + 1;
  NEW.updated_at := now();
  RETURN NEW;
END
$$;

CREATE TRIGGER flows_guard BEFORE UPDATE ON converge.flows
  FOR EACH ROW EXECUTE FUNCTION converge.flows_guard();

-- The message id of one emission: deterministic per (flow, step, kind, attempt), so a crash
-- between emitting and recording the state change, or two reconcilers, can never produce two
-- different messages for the same attempt (the outbox's unique message_id refuses the second).
-- kind: 'command', 'compensation', 'confirm'.
CREATE FUNCTION converge.flow_message_id(p_flow_id uuid, p_step integer, p_kind text,
                                         p_attempt integer) RETURNS uuid
  LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$
  SELECT md5('converge.flow:' || p_flow_id::text || ':' || p_step || ':' || p_kind || ':'
             || p_attempt)::uuid
$$;

-- The stable key of one step's effect, the same for every attempt: receivers use it (header
-- converge-flow-step-key) to make the step's effect idempotent across attempts.
CREATE FUNCTION converge.flow_step_key(p_flow_id uuid, p_step integer, p_kind text) RETURNS uuid
  LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$
  SELECT md5('converge.flow-step:' || p_flow_id::text || ':' || p_step || ':' || p_kind)::uuid
$$;

CREATE FUNCTION converge.flow_definition(p_flow_type text) RETURNS jsonb
  LANGUAGE sql STABLE AS
$$ SELECT definition FROM converge.flow_types WHERE flow_type = p_flow_type $$;

-- Registers (or replaces) a flow type. Running flows keep using the steps by index, so a new
-- definition should only append steps or change topics, types and limits.
CREATE FUNCTION converge.flow_register(p_flow_type text, p_definition jsonb) RETURNS void
  LANGUAGE plpgsql AS
$$
DECLARE
  s jsonb;
  i integer := 0;
BEGIN
  IF p_flow_type IS NULL OR p_flow_type !~ '^[A-Za-z0-9._-]{1,128}$' THEN
    RAISE EXCEPTION 'converge.flow_register: flow type "%" must be 1 to 128 letters, digits, ".", "_" or "-"', p_flow_type
      USING ERRCODE = '22023';
  END IF;
  IF p_definition IS NULL OR jsonb_typeof(p_definition -> 'steps') IS DISTINCT FROM 'array'
     OR jsonb_array_length(p_definition -> 'steps') = 0 THEN
    RAISE EXCEPTION 'converge.flow_register: flow type "%": definition needs a non-empty "steps" array', p_flow_type
      USING ERRCODE = '22023';
  END IF;
  FOR s IN SELECT * FROM jsonb_array_elements(p_definition -> 'steps') LOOP
    IF coalesce(s ->> 'name', '') = '' OR coalesce(s ->> 'topic', '') = ''
       OR coalesce(s ->> 'command', '') = '' THEN
      RAISE EXCEPTION 'converge.flow_register: flow type "%": step % needs "name", "topic" and "command"', p_flow_type, i
        USING ERRCODE = '22023';
    END IF;
    IF coalesce((s ->> 'deadline_ms')::bigint, 0) <= 0 OR coalesce((s ->> 'max_attempts')::integer, 0) <= 0 THEN
      RAISE EXCEPTION 'converge.flow_register: flow type "%": step "%" needs deadline_ms > 0 and max_attempts > 0', p_flow_type, s ->> 'name'
        USING ERRCODE = '22023';
    END IF;
    i := i + 1;
  END LOOP;
  INSERT INTO converge.flow_types (flow_type, definition) VALUES (p_flow_type, p_definition)
    ON CONFLICT (flow_type) DO UPDATE SET definition = EXCLUDED.definition, updated_at = now();
END
$$;

-- Emits one message of a flow through the outbox and records it in the history. The payload is
-- {"flow_id", "flow_type", "business_key", "step", "step_name", "data"}; it does not contain the
-- attempt, so every attempt of a step carries the same payload. Headers: converge-flow-id,
-- converge-flow-step, converge-flow-kind, converge-flow-attempt, converge-flow-step-key.
-- When the same message id is still unpublished in the outbox, nothing is written twice.
CREATE FUNCTION converge.flow_emit(p_flow converge.flows, p_step integer, p_kind text,
                                   p_attempt integer, p_event text) RETURNS uuid
  LANGUAGE plpgsql AS
$$
DECLARE
  v_def  jsonb := converge.flow_definition(p_flow.flow_type);
  v_s    jsonb := v_def -> 'steps' -> p_step;
  v_type text;
  v_topic text;
  v_id   uuid := converge.flow_message_id(p_flow.flow_id, p_step, p_kind, p_attempt);
BEGIN
  IF p_kind = 'command' THEN
    v_type := v_s ->> 'command';
    v_topic := v_s ->> 'topic';
  ELSIF p_kind = 'compensation' THEN
    v_type := v_s ->> 'compensation';
    v_topic := coalesce(v_s ->> 'compensation_topic', v_s ->> 'topic');
  ELSE
    v_type := v_s ->> 'confirm';
    v_topic := coalesce(v_s ->> 'confirm_topic', v_s ->> 'topic');
  END IF;
  IF v_type IS NULL THEN
    RAISE EXCEPTION 'converge: flow type "%" step % has no % message', p_flow.flow_type, p_step, p_kind
      USING ERRCODE = '22023';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM converge.outbox WHERE message_id = v_id) THEN
    PERFORM converge.enqueue(
      v_topic, p_flow.business_key, v_type,
      jsonb_build_object('flow_id', p_flow.flow_id, 'flow_type', p_flow.flow_type,
                         'business_key', p_flow.business_key, 'step', p_step,
                         'step_name', v_s ->> 'name', 'data', p_flow.data),
      jsonb_build_object('converge-flow-id', p_flow.flow_id::text,
                         'converge-flow-step', p_step::text,
                         'converge-flow-kind', p_kind,
                         'converge-flow-attempt', p_attempt::text,
                         'converge-flow-step-key',
                         converge.flow_step_key(p_flow.flow_id, p_step, p_kind)::text),
      NULL, NULL, v_id);
  END IF;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event, message_id, detail)
    VALUES (p_flow.flow_id, p_step, v_s ->> 'name', p_event, v_id, 'attempt ' || p_attempt);
  RETURN v_id;
END
$$;

-- Starts a flow: inserts it at step 0 and emits the first command. Raises 23505 when a flow of
-- this type already exists for the business key, 22023 when the type is not registered.
CREATE FUNCTION converge.flow_start(p_flow_type text, p_business_key text,
                                    p_data jsonb DEFAULT '{}', p_flow_id uuid DEFAULT NULL)
  RETURNS uuid LANGUAGE plpgsql AS
$$
DECLARE
  v_def jsonb := converge.flow_definition(p_flow_type);
  f converge.flows;
BEGIN
  IF v_def IS NULL THEN
    RAISE EXCEPTION 'converge.flow_start: flow type "%" is not registered', p_flow_type
      USING ERRCODE = '22023';
  END IF;
  IF p_business_key IS NULL OR p_business_key = '' THEN
    RAISE EXCEPTION 'converge.flow_start: business key must not be empty' USING ERRCODE = '22023';
  END IF;
  IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
    RAISE EXCEPTION 'converge.flow_start: data must be a JSON object' USING ERRCODE = '22023';
  END IF;
  INSERT INTO converge.flows (flow_id, flow_type, business_key, step, step_name, attempts,
                              deadline_at, data)
    VALUES (coalesce(p_flow_id, converge.uuid_v7()), p_flow_type, p_business_key, 0,
            v_def -> 'steps' -> 0 ->> 'name', 1,
            now() + make_interval(secs => (v_def -> 'steps' -> 0 ->> 'deadline_ms')::bigint / 1000.0),
            p_data)
    RETURNING * INTO f;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event)
    VALUES (f.flow_id, 0, f.step_name, 'started');
  PERFORM converge.flow_emit(f, 0, 'command', 1, 'emitted');
  RETURN f.flow_id;
END
$$;

-- Locks a flow's row (the caller's transaction holds it until commit). Raises 22023 when there
-- is no such flow.
CREATE FUNCTION converge.flow_lock(p_flow_id uuid) RETURNS converge.flows
  LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows;
BEGIN
  SELECT * INTO f FROM converge.flows WHERE flow_id = p_flow_id FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'converge: flow % does not exist', p_flow_id USING ERRCODE = '22023';
  END IF;
  RETURN f;
END
$$;

-- Begins compensation of the steps from p_from_step down to 0, in reverse order; steps without
-- a compensation message are skipped. Returns 'compensating' or 'compensated' (nothing to undo).
CREATE FUNCTION converge.flow_begin_compensation(p_flow converge.flows, p_from_step integer,
                                                 p_reason text) RETURNS text
  LANGUAGE plpgsql AS
$$
DECLARE
  v_def jsonb := converge.flow_definition(p_flow.flow_type);
  v_step integer := p_from_step;
  f converge.flows;
BEGIN
  WHILE v_step >= 0 AND (v_def -> 'steps' -> v_step ->> 'compensation') IS NULL LOOP
    v_step := v_step - 1;
  END LOOP;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
    VALUES (p_flow.flow_id, p_flow.step, p_flow.step_name, 'compensation_started', p_reason);
  IF v_step < 0 THEN
    UPDATE converge.flows SET state = 'compensated', compensation_started_at = now(),
                              finished_at = now(), deadline_at = NULL, last_error = p_reason
      WHERE flow_id = p_flow.flow_id;
    INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
      VALUES (p_flow.flow_id, p_flow.step, p_flow.step_name, 'compensated', 'nothing to undo');
    RETURN 'compensated';
  END IF;
  UPDATE converge.flows
     SET state = 'compensating', compensation_started_at = now(), step = v_step,
         step_name = v_def -> 'steps' -> v_step ->> 'name', attempts = 1, last_error = p_reason,
         deadline_at = now() + make_interval(
           secs => coalesce((v_def ->> 'compensation_deadline_ms')::bigint, 30000) / 1000.0)
   WHERE flow_id = p_flow.flow_id
   RETURNING * INTO f;
  PERFORM converge.flow_emit(f, v_step, 'compensation', 1, 'compensation_emitted');
  RETURN 'compensating';
END
$$;

-- The reply that completes step p_step arrived. Call it in the transaction that applies the
-- reply's work. Returns:
--   'advanced'   the next step's command was emitted
--   'completed'  that was the last step: the flow is completed (TCC confirms emitted)
--   'duplicate'  the flow is already past this step (a redelivered or second reply)
--   'late'       the flow is compensating, compensated or needs attention: the reply changes
--                nothing (the compensation covers the step whose reply this is)
-- The decision is made under the flow's row lock, so a reply and the reconciler can never both
-- win: whichever commits first decides, the other sees the new state.
CREATE FUNCTION converge.flow_complete_step(p_flow_id uuid, p_step integer,
                                            p_data jsonb DEFAULT '{}') RETURNS text
  LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows := converge.flow_lock(p_flow_id);
  v_def jsonb := converge.flow_definition(f.flow_type);
  v_n integer := jsonb_array_length(v_def -> 'steps');
  v_next integer := p_step + 1;
  i integer;
BEGIN
  IF p_data IS NULL OR jsonb_typeof(p_data) <> 'object' THEN
    RAISE EXCEPTION 'converge.flow_complete_step: data must be a JSON object' USING ERRCODE = '22023';
  END IF;
  IF f.state <> 'running' OR f.step <> p_step THEN
    INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
      VALUES (f.flow_id, p_step, coalesce(v_def -> 'steps' -> p_step ->> 'name', '?'),
              CASE WHEN f.state IN ('running', 'completed') AND f.step >= p_step
                   THEN 'duplicate_reply' ELSE 'late_reply' END,
              'flow is ' || f.state || ' at step ' || f.step);
    RETURN CASE WHEN f.state IN ('running', 'completed') AND f.step >= p_step
                THEN 'duplicate' ELSE 'late' END;
  END IF;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event)
    VALUES (f.flow_id, p_step, f.step_name, 'step_completed');
  IF v_next < v_n THEN
    UPDATE converge.flows
       SET step = v_next, step_name = v_def -> 'steps' -> v_next ->> 'name', attempts = 1,
           last_error = NULL, data = data || p_data,
           deadline_at = now() + make_interval(
             secs => (v_def -> 'steps' -> v_next ->> 'deadline_ms')::bigint / 1000.0)
     WHERE flow_id = f.flow_id
     RETURNING * INTO f;
    PERFORM converge.flow_emit(f, v_next, 'command', 1, 'emitted');
    RETURN 'advanced';
  END IF;
  UPDATE converge.flows
     SET state = 'completed', finished_at = now(), deadline_at = NULL, last_error = NULL,
         data = data || p_data
   WHERE flow_id = f.flow_id
   RETURNING * INTO f;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event)
    VALUES (f.flow_id, p_step, f.step_name, 'completed');
  -- Try/Confirm/Cancel: every step that declares a confirm message gets it now.
  FOR i IN 0 .. v_n - 1 LOOP
    IF (v_def -> 'steps' -> i ->> 'confirm') IS NOT NULL THEN
      PERFORM converge.flow_emit(f, i, 'confirm', 1, 'confirm_emitted');
    END IF;
  END LOOP;
  RETURN 'completed';
END
$$;

-- The step p_step failed for good (e.g. out of stock): compensate the steps before it.
-- Returns 'compensating', 'compensated', 'duplicate' or 'late' (see flow_complete_step).
CREATE FUNCTION converge.flow_fail_step(p_flow_id uuid, p_step integer, p_reason text)
  RETURNS text LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows := converge.flow_lock(p_flow_id);
BEGIN
  IF f.state <> 'running' OR f.step <> p_step THEN
    INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
      VALUES (f.flow_id, p_step, f.step_name, 'late_reply', 'failure reply; flow is ' || f.state);
    RETURN CASE WHEN f.state IN ('running', 'completed') AND f.step > p_step
                THEN 'duplicate' ELSE 'late' END;
  END IF;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
    VALUES (f.flow_id, p_step, f.step_name, 'step_failed', p_reason);
  RETURN converge.flow_begin_compensation(
    f, p_step - 1, 'step "' || f.step_name || '" failed: ' || coalesce(p_reason, ''));
END
$$;

-- The compensation of step p_step was applied. Moves to the next lower step to compensate, or
-- ends the flow as compensated. Returns 'advanced', 'compensated' or 'duplicate'.
CREATE FUNCTION converge.flow_compensation_done(p_flow_id uuid, p_step integer) RETURNS text
  LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows := converge.flow_lock(p_flow_id);
  v_def jsonb := converge.flow_definition(f.flow_type);
  v_step integer := p_step - 1;
BEGIN
  IF f.state NOT IN ('compensating', 'needs_attention') OR f.step <> p_step
     OR f.compensation_started_at IS NULL THEN
    INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
      VALUES (f.flow_id, p_step, f.step_name, 'duplicate_reply',
              'compensation reply; flow is ' || f.state || ' at step ' || f.step);
    RETURN 'duplicate';
  END IF;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event)
    VALUES (f.flow_id, p_step, f.step_name, 'step_compensated');
  WHILE v_step >= 0 AND (v_def -> 'steps' -> v_step ->> 'compensation') IS NULL LOOP
    v_step := v_step - 1;
  END LOOP;
  IF v_step < 0 THEN
    UPDATE converge.flows SET state = 'compensated', finished_at = now(), deadline_at = NULL
      WHERE flow_id = f.flow_id;
    INSERT INTO converge.flow_history (flow_id, step, step_name, event)
      VALUES (f.flow_id, p_step, f.step_name, 'compensated');
    RETURN 'compensated';
  END IF;
  UPDATE converge.flows
     SET state = 'compensating', step = v_step, step_name = v_def -> 'steps' -> v_step ->> 'name',
         attempts = 1, last_error = NULL,
         deadline_at = now() + make_interval(
           secs => coalesce((v_def ->> 'compensation_deadline_ms')::bigint, 30000) / 1000.0)
   WHERE flow_id = f.flow_id
   RETURNING * INTO f;
  PERFORM converge.flow_emit(f, v_step, 'compensation', 1, 'compensation_emitted');
  RETURN 'advanced';
END
$$;

-- The compensation of step p_step failed. Recorded as the flow's last error and made due at
-- once: the reconciler re-emits it (next attempt) or, after compensation_max_attempts, parks
-- the flow as needs_attention with this reason. Returns 'retrying' or 'duplicate'.
CREATE FUNCTION converge.flow_compensation_failed(p_flow_id uuid, p_step integer,
                                                  p_reason text) RETURNS text
  LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows := converge.flow_lock(p_flow_id);
BEGIN
  IF f.state <> 'compensating' OR f.step <> p_step THEN
    RETURN 'duplicate';
  END IF;
  UPDATE converge.flows SET last_error = p_reason, deadline_at = now() WHERE flow_id = f.flow_id;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
    VALUES (f.flow_id, p_step, f.step_name, 'compensation_failed', p_reason);
  RETURN 'retrying';
END
$$;

-- One reconciler pass: takes up to p_limit flows past their deadline (database clock) that no
-- other transaction holds (FOR UPDATE SKIP LOCKED: several reconcilers share the work, none
-- waits for another) and, per flow:
--   any,          the last emission is still unpublished in the outbox (the relay is behind
--                                           or down) -> extend the deadline: a message that was
--                                           never sent cannot have been answered, so no attempt
--                                           is spent and nothing is compensated
--   running,      attempts < max_attempts  -> re-emit the step's command (next attempt)
--   running,      attempts exhausted       -> compensate from this step down (its outcome is
--                                              unknown: the reply may only have been lost)
--   compensating, attempts < max           -> re-emit the compensation (next attempt)
--   compensating, attempts exhausted       -> needs_attention, with the reason
-- Returns one row per flow acted on.
CREATE FUNCTION converge.flow_reconcile(p_limit integer)
  RETURNS TABLE (flow_id uuid, action text) LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows;
  v_def jsonb;
  v_max integer;
  v_reason text;
BEGIN
  FOR f IN
    SELECT * FROM converge.flows fl
     WHERE fl.state IN ('running', 'compensating') AND fl.deadline_at <= now()
     ORDER BY fl.deadline_at
     LIMIT p_limit
     FOR UPDATE SKIP LOCKED
  LOOP
    flow_id := f.flow_id;
    v_def := converge.flow_definition(f.flow_type);
    IF v_def IS NULL OR (v_def -> 'steps' -> f.step) IS NULL THEN
      v_reason := 'flow type "' || f.flow_type || '" step ' || f.step || ' is not registered';
      UPDATE converge.flows fl SET state = 'needs_attention', deadline_at = NULL,
                                   last_error = v_reason
        WHERE fl.flow_id = f.flow_id;
      INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
        VALUES (f.flow_id, f.step, f.step_name, 'needs_attention', v_reason);
      action := 'needs_attention';
    ELSIF EXISTS (SELECT 1 FROM converge.outbox o
                   WHERE o.message_id = converge.flow_message_id(
                           f.flow_id, f.step,
                           CASE f.state WHEN 'running' THEN 'command' ELSE 'compensation' END,
                           f.attempts)) THEN
      UPDATE converge.flows fl
         SET deadline_at = now() + make_interval(secs => (CASE f.state
               WHEN 'running' THEN (v_def -> 'steps' -> f.step ->> 'deadline_ms')::bigint
               ELSE coalesce((v_def ->> 'compensation_deadline_ms')::bigint, 30000) END) / 1000.0)
       WHERE fl.flow_id = f.flow_id;
      INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
        VALUES (f.flow_id, f.step, f.step_name, 'deadline_extended',
                'attempt ' || f.attempts || ' is not published yet (relay behind)');
      action := 'extended';
    ELSIF f.state = 'running' THEN
      v_max := (v_def -> 'steps' -> f.step ->> 'max_attempts')::integer;
      IF f.attempts < v_max THEN
        UPDATE converge.flows fl
           SET attempts = fl.attempts + 1,
               deadline_at = now() + make_interval(
                 secs => (v_def -> 'steps' -> f.step ->> 'deadline_ms')::bigint / 1000.0)
         WHERE fl.flow_id = f.flow_id
         RETURNING * INTO f;
        PERFORM converge.flow_emit(f, f.step, 'command', f.attempts, 'reemitted');
        action := 'reemitted';
      ELSE
        v_reason := 'step "' || f.step_name || '" got no reply after ' || f.attempts
                    || ' attempt(s)';
        INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
          VALUES (f.flow_id, f.step, f.step_name, 'deadline_exceeded', v_reason);
        action := converge.flow_begin_compensation(f, f.step, v_reason);
        action := CASE action WHEN 'compensating' THEN 'compensation_started' ELSE action END;
      END IF;
    ELSE
      v_max := coalesce((v_def ->> 'compensation_max_attempts')::integer, 5);
      IF f.attempts < v_max THEN
        UPDATE converge.flows fl
           SET attempts = fl.attempts + 1,
               deadline_at = now() + make_interval(
                 secs => coalesce((v_def ->> 'compensation_deadline_ms')::bigint, 30000) / 1000.0)
         WHERE fl.flow_id = f.flow_id
         RETURNING * INTO f;
        PERFORM converge.flow_emit(f, f.step, 'compensation', f.attempts,
                                   'compensation_reemitted');
        action := 'compensation_reemitted';
      ELSE
        v_reason := 'compensation of step "' || f.step_name || '" failed after ' || f.attempts
                    || ' attempt(s)' || coalesce(': ' || f.last_error, '');
        UPDATE converge.flows fl SET state = 'needs_attention', deadline_at = NULL,
                                     last_error = v_reason
          WHERE fl.flow_id = f.flow_id;
        INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
          VALUES (f.flow_id, f.step, f.step_name, 'needs_attention', v_reason);
        action := 'needs_attention';
      END IF;
    END IF;
    RETURN NEXT;
  END LOOP;
END
$$;

-- Operator repairs (convergectl flows retry|compensate|resolve). Each returns what it did; the
-- caller writes the audit row in the same transaction.

-- retry: a running flow re-emits its current step now (next attempt); a compensating or
-- needs_attention flow re-emits its current compensation (next attempt). Either way the step
-- gets one more attempt before the reconciler's limits apply again.
CREATE FUNCTION converge.flow_retry(p_flow_id uuid) RETURNS text
  LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows := converge.flow_lock(p_flow_id);
  v_def jsonb := converge.flow_definition(f.flow_type);
BEGIN
  IF v_def IS NULL THEN
    RAISE EXCEPTION 'converge: flow type "%" is not registered', f.flow_type USING ERRCODE = '55000';
  END IF;
  IF f.state = 'running' THEN
    UPDATE converge.flows fl
       SET attempts = fl.attempts + 1,
           deadline_at = now() + make_interval(
             secs => (v_def -> 'steps' -> f.step ->> 'deadline_ms')::bigint / 1000.0)
     WHERE fl.flow_id = f.flow_id RETURNING * INTO f;
    PERFORM converge.flow_emit(f, f.step, 'command', f.attempts, 'retried');
    RETURN 'reemitted step ' || f.step || ' (' || f.step_name || ') attempt ' || f.attempts;
  ELSIF f.state IN ('compensating', 'needs_attention') AND f.compensation_started_at IS NOT NULL THEN
    UPDATE converge.flows fl
       SET state = 'compensating', attempts = fl.attempts + 1,
           deadline_at = now() + make_interval(
             secs => coalesce((v_def ->> 'compensation_deadline_ms')::bigint, 30000) / 1000.0)
     WHERE fl.flow_id = f.flow_id RETURNING * INTO f;
    PERFORM converge.flow_emit(f, f.step, 'compensation', f.attempts, 'retried');
    RETURN 're-emitted the compensation of step ' || f.step || ' (' || f.step_name
           || ') attempt ' || f.attempts;
  END IF;
  RAISE EXCEPTION 'converge: flow % is %; only running, compensating or needs_attention flows can be retried',
    f.flow_id, f.state USING ERRCODE = '55000';
END
$$;

-- compensate: an operator gives up on a running flow (or one that needs attention before any
-- compensation): compensation starts from the current step down.
CREATE FUNCTION converge.flow_compensate(p_flow_id uuid, p_reason text) RETURNS text
  LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows := converge.flow_lock(p_flow_id);
BEGIN
  IF f.state NOT IN ('running', 'needs_attention') OR f.compensation_started_at IS NOT NULL THEN
    RAISE EXCEPTION 'converge: flow % is % (compensation started: %); only a running flow can be compensated',
      f.flow_id, f.state, f.compensation_started_at IS NOT NULL
      USING ERRCODE = '55000';
  END IF;
  RETURN converge.flow_begin_compensation(f, f.step, 'operator: ' || coalesce(p_reason, ''));
END
$$;

-- resolve: a person fixed a stuck flow by hand and records the outcome ('completed' or
-- 'compensated'). Only for needs_attention or running flows; the trigger still refuses
-- 'completed' for a flow that started compensating.
CREATE FUNCTION converge.flow_resolve(p_flow_id uuid, p_outcome text, p_reason text)
  RETURNS text LANGUAGE plpgsql AS
$$
DECLARE
  f converge.flows := converge.flow_lock(p_flow_id);
BEGIN
  IF p_outcome NOT IN ('completed', 'compensated') THEN
    RAISE EXCEPTION 'converge: outcome must be completed or compensated, not "%"', p_outcome
      USING ERRCODE = '22023';
  END IF;
  IF f.state NOT IN ('running', 'needs_attention', 'compensating') THEN
    RAISE EXCEPTION 'converge: flow % is already %', f.flow_id, f.state USING ERRCODE = '55000';
  END IF;
  IF p_outcome = 'completed' AND f.compensation_started_at IS NOT NULL THEN
    RAISE EXCEPTION 'converge: flow % started compensating at %; it can only be resolved as compensated',
      f.flow_id, f.compensation_started_at USING ERRCODE = '55000';
  END IF;
  UPDATE converge.flows
     SET state = p_outcome, finished_at = now(), deadline_at = NULL,
         compensation_started_at = CASE WHEN p_outcome = 'compensated'
                                        THEN coalesce(compensation_started_at, now())
                                        ELSE compensation_started_at END,
         last_error = 'resolved by operator: ' || coalesce(p_reason, '')
   WHERE flow_id = f.flow_id;
  INSERT INTO converge.flow_history (flow_id, step, step_name, event, detail)
    VALUES (f.flow_id, f.step, f.step_name, 'resolved_' || p_outcome, p_reason);
  RETURN 'resolved as ' || p_outcome;
END
$$;
