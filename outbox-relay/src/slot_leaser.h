// SlotLeaser: shares the 256 key slots between live relays (converge.relay_slots).
//
// Each relay heartbeats in converge.relay_instances, aims for ceil(256 / live relays) slots,
// renews its leases, gives surplus slots back (only between batches, so nothing of a released
// slot is in flight) and takes free or expired ones. All times are the database's clock; the
// relay's own view of "my leases are valid until" is derived from its monotonic clock measured
// before the renewing statement was sent, so it is never later than the database's.
//
// Thread safety: one thread at a time (it owns one PostgreSQL connection).
#pragma once

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include <pqxx/pqxx>

#include "converge/common/clock.h"
#include "converge/common/status.h"

namespace converge::outbox {

struct LeaseOptions {
  std::chrono::milliseconds ttl{30000};
  std::chrono::milliseconds renew_interval{5000};
  std::chrono::milliseconds takeover_grace{1000};
};

class SlotLeaser {
 public:
  SlotLeaser(std::string url, std::string instance_id, LeaseOptions options, Clock* clock);

  // Renews, rebalances and acquires when a renewal is due (or `force`). On error the owned set
  // is kept but valid_until() is not extended, so the relay stops publishing once it passes.
  // With `allow_release` false surplus slots are renewed instead of given back (a batch of one
  // of the relay's targets is in flight and may hold rows of them).
  Status Maintain(bool force = false, bool allow_release = true);

  // Gives every slot back and deregisters (graceful shutdown).
  Status ReleaseAll();

  const std::vector<int>& owned() const { return owned_; }
  std::chrono::steady_clock::time_point valid_until() const { return valid_until_; }
  bool Owns(int slot) const;
  int live_relays() const { return live_relays_; }
  // True when the last Maintain kept surplus slots because it was not allowed to release them:
  // the relay should let its pipeline run empty and call Maintain(true, true).
  bool release_pending() const { return release_pending_; }

 private:
  Status Fail(const std::exception& e);

  std::string url_;
  std::string instance_id_;
  LeaseOptions options_;
  Clock* clock_;
  std::unique_ptr<pqxx::connection> conn_;
  std::vector<int> owned_;
  std::chrono::steady_clock::time_point valid_until_{};
  std::chrono::steady_clock::time_point next_renewal_{};
  int live_relays_ = 0;
  bool release_pending_ = false;
};

}  // namespace converge::outbox
