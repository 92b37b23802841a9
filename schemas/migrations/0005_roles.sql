-- Least-privilege roles, version 5. Additions only.
--
-- Group roles (NOLOGIN) that each Converge component's login user is made a member of, so
-- that each can do only what it needs. docs/security.md lists what each may do and the
-- statements an operator runs to create login users. Roles are cluster-wide: they are created
-- once (by the first database migrated in the cluster) and granted per database here. The
-- migrating user needs CREATEROLE the first time (or an administrator creates the roles first).
--
--   converge_writer      a service that enqueues messages (converge.enqueue*, outbox::Enqueue)
--   converge_relay       converge-relay
--   converge_consumer    a service linking the consumer runtime (inbox, offsets) — also a writer
--   converge_flows       code that starts and advances flows (order service, orchestrator)
--   converge_devices     code that sends device commands, sets twins, ingests device messages
--   converge_reconciler  converge-reconciler (flows, the device sweep, stuck-things metrics)
--   converge_operator    convergectl repairs (dead letters, keys, flows) and the audit log
--   converge_readonly    dashboards and `convergectl status`
--
-- Nobody but the owner may UPDATE or DELETE converge.audit_log: it is append-only.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['converge_writer', 'converge_relay', 'converge_consumer',
                           'converge_flows', 'converge_devices', 'converge_reconciler',
                           'converge_operator', 'converge_readonly'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE format('CREATE ROLE %I NOLOGIN', r);
      EXCEPTION
        WHEN duplicate_object OR unique_violation THEN NULL;  -- created concurrently
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION 'converge migration 5: role % does not exist and % may not create roles', r, current_user
            USING HINT = 'Run the migration as a user with CREATEROLE once, or create the roles '
                         'listed in docs/security.md first.';
      END;
    END IF;
  END LOOP;
END
$$;

-- Every role reaches the schema; functions are executable by PUBLIC (PostgreSQL's default) and
-- run with the caller's privileges (SECURITY INVOKER), so the table grants below decide.
GRANT USAGE ON SCHEMA converge TO converge_writer, converge_relay, converge_consumer,
  converge_flows, converge_devices, converge_reconciler, converge_operator, converge_readonly;
GRANT SELECT ON converge.schema_migrations TO converge_writer, converge_relay, converge_consumer,
  converge_flows, converge_devices, converge_reconciler, converge_operator, converge_readonly;

-- Writers: converge.enqueue* (outbox_keys numbers the key, the row goes to the outbox).
GRANT SELECT, INSERT, UPDATE ON converge.outbox_keys TO converge_writer;
GRANT INSERT ON converge.outbox TO converge_writer;

-- The relay: claim, publish, delete; retries and parking; leases; dead letters.
GRANT SELECT, DELETE, UPDATE (attempts, last_error) ON converge.outbox TO converge_relay;
GRANT SELECT, INSERT, UPDATE, DELETE ON converge.outbox_blocked_keys TO converge_relay;
GRANT SELECT, UPDATE (owner, epoch, lease_until) ON converge.relay_slots TO converge_relay;
GRANT SELECT, INSERT, UPDATE, DELETE ON converge.relay_instances TO converge_relay;
GRANT INSERT ON converge.dead_letters TO converge_relay;

-- The consumer runtime: inbox, offsets and key sequences; dead letters; chained enqueues.
GRANT converge_writer TO converge_consumer;
GRANT SELECT, INSERT, DELETE ON converge.inbox TO converge_consumer;
GRANT SELECT, INSERT, UPDATE ON converge.consumer_offsets TO converge_consumer;
GRANT SELECT, INSERT, UPDATE ON converge.consumer_key_seq TO converge_consumer;
GRANT INSERT ON converge.dead_letters TO converge_consumer;

-- Flows: start and advance (converge.flow_* functions) and emit through the outbox.
GRANT converge_writer TO converge_flows;
GRANT SELECT, INSERT, UPDATE ON converge.flows TO converge_flows;
GRANT SELECT, INSERT ON converge.flow_history TO converge_flows;
GRANT SELECT, INSERT, UPDATE ON converge.flow_types TO converge_flows;
-- A re-emission first looks whether the step's last message is still waiting in the outbox.
GRANT SELECT ON converge.outbox TO converge_flows;

-- Devices: commands, twins, presence; commands and desired state go out through the outbox.
GRANT converge_writer TO converge_devices;
GRANT SELECT, INSERT, UPDATE ON converge.device_commands, converge.device_twins,
  converge.device_presence TO converge_devices;
GRANT SELECT ON converge.outbox TO converge_devices;

-- The reconciler: flows and the device sweep, and read access for the stuck-things metrics.
GRANT converge_flows, converge_devices TO converge_reconciler;
GRANT SELECT ON converge.outbox, converge.outbox_blocked_keys, converge.dead_letters
  TO converge_reconciler;

-- Read-only: everything Converge stores, for dashboards and `convergectl status`.
GRANT SELECT ON ALL TABLES IN SCHEMA converge TO converge_readonly;

-- Operators (convergectl): read everything; replay and discard dead letters, park and unpark
-- keys, repair flows; append to the audit log.
GRANT converge_readonly, converge_flows TO converge_operator;
GRANT UPDATE (status, resolved_at, resolved_by) ON converge.dead_letters TO converge_operator;
GRANT INSERT, UPDATE, DELETE ON converge.outbox_blocked_keys TO converge_operator;
GRANT DELETE ON converge.inbox TO converge_operator;
GRANT INSERT ON converge.audit_log TO converge_operator;
