-- Consumer runtime, version 2. Additions only; 0001 is unchanged.

-- The inbox key of a message id. Converge's own ids are UUIDs and are stored as they are;
-- CloudEvents allows any string id (other producers use "A234-1234-1234"), and such an id is
-- mapped to a name-based UUID (md5 of a fixed prefix and the id) so that it still dedupes.
CREATE FUNCTION converge.message_uuid(p_id text) RETURNS uuid
  LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$
  SELECT CASE
           WHEN p_id ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
             THEN p_id::uuid
           ELSE md5('converge.message_id:' || p_id)::uuid
         END
$$;

-- Stored consumer offsets only move forward. The runtime's fenced UPDATE already refuses to
-- move an offset backwards; this trigger makes the rule hold for every writer (a buggy tool, a
-- hand-written UPDATE). An operator who really means to rewind sets
-- `SET LOCAL converge.allow_offset_rewind = 'on'` in the transaction that does it.
CREATE FUNCTION converge.consumer_offsets_forward_only() RETURNS trigger
  LANGUAGE plpgsql AS
$$
BEGIN
  IF NEW.next_offset < OLD.next_offset
     AND coalesce(current_setting('converge.allow_offset_rewind', true), '') <> 'on' THEN
    RAISE EXCEPTION 'converge: the offset of group "%" topic "%" partition % would move backwards from % to %',
      OLD.consumer_group, OLD.topic, OLD.partition, OLD.next_offset, NEW.next_offset
      USING ERRCODE = '55000';
  END IF;
  RETURN NEW;
END
$$;

CREATE TRIGGER consumer_offsets_forward_only
  BEFORE UPDATE OF next_offset ON converge.consumer_offsets
  FOR EACH ROW EXECUTE FUNCTION converge.consumer_offsets_forward_only();

-- Pruning deletes per (group, topic, partition) below the committed offset and older than the
-- dedupe window; this index serves that walk without touching other partitions' rows.
CREATE INDEX inbox_prune_partition
  ON converge.inbox (consumer_group, topic, partition, processed_at);
