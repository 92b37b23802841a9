#include "slot_leaser.h"

#include <unistd.h>

#include <algorithm>

#include "converge/schemas/pg.h"
#include "outbox_store.h"

namespace converge::outbox {

SlotLeaser::SlotLeaser(std::string url, std::string instance_id, LeaseOptions options, Clock* clock)
    : url_(std::move(url)),
      instance_id_(std::move(instance_id)),
      options_(options),
      clock_(clock) {}

bool SlotLeaser::Owns(int slot) const {
  return std::binary_search(owned_.begin(), owned_.end(), slot);
}

Status SlotLeaser::Fail(const std::exception& e) {
  Status st = pg::StatusFromException(e);
  if (st.code() == StatusCode::kUnavailable || st.code() == StatusCode::kDeadlineExceeded)
    conn_.reset();
  return st.WithContext("slot lease");
}

Status SlotLeaser::Maintain(bool force, bool allow_release) {
  const auto start = clock_->Monotonic();
  if (!force && start < next_renewal_) return Status::Ok();
  if (!conn_) {
    auto c = pg::Connect(url_);
    if (!c.ok()) return c.status();
    conn_ = std::move(c).value();
  }
  const int64_t ttl_ms = options_.ttl.count();
  const int64_t grace_ms = options_.takeover_grace.count();
  try {
    pqxx::work tx(*conn_);
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    tx.exec_params(
        "INSERT INTO converge.relay_instances (instance_id, hostname, pid, lease_until) "
        "VALUES ($1, $2, $3, now() + $4 * interval '1 millisecond') "
        "ON CONFLICT (instance_id) DO UPDATE SET heartbeat_at = now(), "
        "  lease_until = excluded.lease_until",
        instance_id_, std::string(host), static_cast<int>(::getpid()), ttl_ms);
    // Forget relays that stopped heartbeating long ago (their slots expired already).
    tx.exec_params(
        "DELETE FROM converge.relay_instances "
        "WHERE lease_until < now() - $1 * interval '1 millisecond'",
        ttl_ms);
    const int live =
        tx.exec("SELECT count(*) FROM converge.relay_instances WHERE lease_until > now()")[0][0]
            .as<int>();
    const int target = (kSlotCount + std::max(live, 1) - 1) / std::max(live, 1);

    std::vector<int> owned;
    bool release_pending = false;
    for (const auto& f : tx.exec_params(
             "UPDATE converge.relay_slots SET lease_until = now() + $2 * interval '1 millisecond' "
             "WHERE owner = $1 AND lease_until > now() RETURNING slot",
             instance_id_, ttl_ms))
      owned.push_back(f[0].as<int>());
    std::sort(owned.begin(), owned.end());

    if (static_cast<int>(owned.size()) > target && !allow_release) {
      release_pending = true;
    } else if (static_cast<int>(owned.size()) > target) {
      // Give back the surplus (highest slots) so newly started relays get work.
      std::vector<int> surplus(owned.begin() + target, owned.end());
      owned.resize(target);
      tx.exec_params(
          "UPDATE converge.relay_slots SET owner = NULL, lease_until = NULL "
          "WHERE owner = $1 AND slot = ANY($2::smallint[])",
          instance_id_, pg::IntArrayLiteral(surplus));
    } else if (static_cast<int>(owned.size()) < target) {
      // Free slots, or slots whose owner's lease ran out more than takeover_grace ago.
      for (const auto& f : tx.exec_params(
               "UPDATE converge.relay_slots s SET owner = $1, epoch = s.epoch + 1, "
               "  lease_until = now() + $2 * interval '1 millisecond' "
               "WHERE s.slot IN (SELECT slot FROM converge.relay_slots "
               "                  WHERE owner IS NULL "
               "                     OR lease_until < now() - $3 * interval '1 millisecond' "
               "                  ORDER BY slot LIMIT $4 FOR UPDATE SKIP LOCKED) "
               "RETURNING s.slot",
               instance_id_, ttl_ms, grace_ms, target - static_cast<int>(owned.size())))
        owned.push_back(f[0].as<int>());
      std::sort(owned.begin(), owned.end());
    }
    tx.commit();
    owned_ = std::move(owned);
    live_relays_ = live;
    release_pending_ = release_pending;
    // Measured from before the statements were sent: never later than the database's view.
    valid_until_ = start + options_.ttl;
    next_renewal_ = start + options_.renew_interval;
    return Status::Ok();
  } catch (const std::exception& e) {
    return Fail(e);
  }
}

Status SlotLeaser::ReleaseAll() {
  owned_.clear();
  valid_until_ = {};
  if (!conn_) {
    auto c = pg::Connect(url_);
    if (!c.ok()) return c.status();
    conn_ = std::move(c).value();
  }
  try {
    pqxx::work tx(*conn_);
    tx.exec_params(
        "UPDATE converge.relay_slots SET owner = NULL, lease_until = NULL WHERE owner = $1",
        instance_id_);
    tx.exec_params("DELETE FROM converge.relay_instances WHERE instance_id = $1", instance_id_);
    tx.commit();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Fail(e);
  }
}

}  // namespace converge::outbox
