-- Writer throughput, version 6. Replaces converge.enqueue_message only (0001 is unchanged).
--
-- converge.enqueue_message notifies relays on every enqueue (LISTEN/NOTIFY wake-up). PostgreSQL
-- serializes committing transactions that issued NOTIFY (a cluster-wide lock held through the
-- commit's WAL flush): bench/ measured 16 writers at 1,547 commits/s with a plain INSERT and
-- 228 commits/s with INSERT + pg_notify. The setting converge.notify = off skips the
-- notification; relays then find rows by polling (relay.poll_interval). The default is on.

CREATE OR REPLACE FUNCTION converge.enqueue_message(p_topic text, p_key text, p_type text, p_payload bytea,
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
  -- Relays also poll, so a lost or skipped notification only adds latency. NOTIFY holds a
  -- cluster-wide lock from commit through the WAL flush, which serializes concurrent writers;
  -- `SET converge.notify = off` (per session, role or database) trades relay wake-up latency
  -- (up to relay.poll_interval) for writer throughput. docs/schema.md "Wake-ups".
  IF coalesce(current_setting('converge.notify', true), '') NOT IN ('off', 'false', '0') THEN
    PERFORM pg_notify('converge_outbox', '');
  END IF;
END
$$;
