#include "converge/outbox/relay.h"

#include <poll.h>
#include <unistd.h>
#include <fcntl.h>

#include <algorithm>
#include <map>
#include <set>
#include <thread>

#include <pqxx/pqxx>

#include "converge/common/failpoint.h"
#include "converge/common/log.h"
#include "converge/common/uuid.h"
#include "converge/schemas/pg.h"
#include "outbox_store.h"
#include "slot_leaser.h"

namespace converge::outbox {

namespace {

std::string DefaultInstanceId() {
  char host[256] = {0};
  ::gethostname(host, sizeof host - 1);
  return std::string(host) + ":" + std::to_string(::getpid()) + ":" +
         NewUuidV7().ToString().substr(24);
}

// Maps a permanent delivery error to the dead-letter error_code.
std::string ErrorCodeFor(const Status& st) {
  const std::string& m = st.message();
  if (m.find("too large") != std::string::npos || m.find("TOO_LARGE") != std::string::npos)
    return "too_large";
  if (m.find("uthoriz") != std::string::npos || m.find("AUTHORIZATION") != std::string::npos)
    return "not_authorized";
  if (st.code() == StatusCode::kInvalidArgument) return "invalid";
  return "permanent";
}

}  // namespace

Status RelayOptions::Validate() const {
  if (database_url.empty()) return Status::InvalidArgument("database.url must be set");
  if (batch_size < 1 || batch_size > 100000)
    return Status::InvalidArgument("relay.batch_size must be in [1, 100000]");
  if (poll_interval.count() < 1) return Status::InvalidArgument("relay.poll_interval must be > 0");
  if (publish_timeout <= broker_delivery_timeout)
    return Status::InvalidArgument(
        "relay.publish_timeout must be longer than the broker's delivery timeout "
        "(kafka.message.timeout.ms)");
  if (lease_ttl < publish_timeout * 2)
    return Status::InvalidArgument(
        "relay.lease_ttl must be at least twice relay.publish_timeout, so a renewed lease "
        "always outlives a batch in flight");
  if (lease_renew_interval.count() < 1 || lease_renew_interval * 2 > lease_ttl - publish_timeout)
    return Status::InvalidArgument(
        "relay.lease_renew_interval must be > 0 and at most (lease_ttl - publish_timeout) / 2");
  if (takeover_grace.count() < 0)
    return Status::InvalidArgument("relay.takeover_grace must be >= 0");
  CONVERGE_RETURN_IF_ERROR(retry.Validate("relay.retry"));
  CONVERGE_RETURN_IF_ERROR(breaker_backoff.Validate("relay.breaker"));
  if (breaker_failures < 1) return Status::InvalidArgument("relay.breaker_failures must be >= 1");
  if (rate_limit < 0) return Status::InvalidArgument("relay.rate_limit must be >= 0");
  if (max_attempts < 0) return Status::InvalidArgument("relay.max_attempts must be >= 0");
  return Status::Ok();
}

class Relay::Impl {
 public:
  Impl(RelayOptions options, std::unique_ptr<broker::Publisher> publisher,
       RelayObserver* observer, Clock* clock)
      : options_(std::move(options)),
        publisher_(std::move(publisher)),
        observer_(observer),
        clock_(clock),
        instance_id_(options_.instance_id.empty() ? DefaultInstanceId() : options_.instance_id),
        store_(options_.database_url, instance_id_),
        leaser_(options_.database_url, instance_id_,
                LeaseOptions{options_.lease_ttl, options_.lease_renew_interval,
                             options_.takeover_grace},
                clock),
        retry_backoff_(options_.retry),
        breaker_backoff_(options_.breaker_backoff),
        reconnect_backoff_(BackoffPolicy{std::chrono::milliseconds(100),
                                         std::chrono::milliseconds(5000), 2.0, 0.5}) {
    if (::pipe2(wake_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) wake_pipe_[0] = wake_pipe_[1] = -1;
  }

  ~Impl() {
    if (wake_pipe_[0] >= 0) ::close(wake_pipe_[0]);
    if (wake_pipe_[1] >= 0) ::close(wake_pipe_[1]);
  }

  Status Run();
  void Stop() {
    stop_.store(true);
    if (wake_pipe_[1] >= 0) {
      char c = 1;
      [[maybe_unused]] auto n = ::write(wake_pipe_[1], &c, 1);
    }
  }
  Result<size_t> RunOnce();

  RelayStats stats_;
  const std::string& instance_id() const { return instance_id_; }

 private:
  Status EnsureConnected();
  Status ConnectListener();
  // Waits for a notification, Stop(), or the timeout.
  void WaitForWork(std::chrono::milliseconds timeout);
  void Sleep(std::chrono::milliseconds d) { WaitForWork(d); }
  // Publishes the rows in waves and decides each row's outcome.
  BatchOutcome PublishRows(const std::vector<OutboxRow>& rows, bool* broker_down);
  bool LeaseCoversPublish();
  void Throttle(size_t n);
  void UpdateGauges();

  RelayOptions options_;
  std::unique_ptr<broker::Publisher> publisher_;
  RelayObserver* observer_;
  Clock* clock_;
  std::string instance_id_;
  OutboxStore store_;
  SlotLeaser leaser_;
  std::unique_ptr<pqxx::connection> listener_;
  Backoff retry_backoff_;
  Backoff breaker_backoff_;
  Backoff reconnect_backoff_;
  int reconnect_attempt_ = 0;
  int breaker_failures_ = 0;  // consecutive batches with no success
  int breaker_opens_ = 0;
  std::chrono::steady_clock::time_point breaker_until_{};
  std::chrono::steady_clock::time_point next_gauges_{};
  double tokens_ = 0;
  std::chrono::steady_clock::time_point tokens_at_{};
  Logger log_{"relay"};
  std::atomic<bool> stop_{false};
  int wake_pipe_[2] = {-1, -1};
};

Status Relay::Impl::ConnectListener() {
  auto c = pg::Connect(options_.database_url);
  if (!c.ok()) return c.status();
  try {
    pqxx::nontransaction(**c).exec("LISTEN converge_outbox");
  } catch (const std::exception& e) {
    return pg::StatusFromException(e);
  }
  listener_ = std::move(c).value();
  return Status::Ok();
}

Status Relay::Impl::EnsureConnected() {
  if (!store_.connected()) CONVERGE_RETURN_IF_ERROR(store_.Connect());
  if (!listener_) {
    // The listener is only a wake-up hint; polling covers for it when it is down.
    Status st = ConnectListener();
    if (!st.ok())
      log_.LogEvery("relay.listen", std::chrono::seconds(30), Level::kWarn,
               "LISTEN connection failed; polling only", {{"error", st.ToString()}});
  }
  return Status::Ok();
}

void Relay::Impl::WaitForWork(std::chrono::milliseconds timeout) {
  if (stop_.load()) return;
  struct pollfd fds[2];
  int n = 0;
  fds[n++] = {wake_pipe_[0], POLLIN, 0};
  if (listener_) fds[n++] = {listener_->sock(), POLLIN, 0};
  int r = ::poll(fds, n, static_cast<int>(timeout.count()));
  if (r > 0 && n == 2 && (fds[1].revents & (POLLIN | POLLERR | POLLHUP))) {
    try {
      listener_->get_notifs();  // drain; the content does not matter
    } catch (const std::exception&) {
      listener_.reset();
    }
  }
  if (r > 0 && (fds[0].revents & POLLIN)) {
    char buf[16];
    while (::read(wake_pipe_[0], buf, sizeof buf) > 0) {
    }
  }
}

bool Relay::Impl::LeaseCoversPublish() {
  // Rows may be handed to the broker only while the lease outlives the broker's delivery
  // timeout: a message the broker could still write after the lease ends could overtake the
  // next owner's publishes of the same key.
  const auto margin = options_.publish_timeout + std::chrono::milliseconds(500);
  if (clock_->Monotonic() + margin < leaser_.valid_until()) return true;
  Status st = leaser_.Maintain(/*force=*/true);
  if (!st.ok()) {
    log_.LogEvery("relay.lease", std::chrono::seconds(10), Level::kWarn, "cannot renew slot leases",
             {{"error", st.ToString()}});
    return false;
  }
  return clock_->Monotonic() + margin < leaser_.valid_until();
}

void Relay::Impl::Throttle(size_t n) {
  if (options_.rate_limit <= 0) return;
  const auto now = clock_->Monotonic();
  if (tokens_at_ == std::chrono::steady_clock::time_point{}) {
    tokens_at_ = now;
    tokens_ = options_.rate_limit;  // one second of burst
  }
  tokens_ = std::min(options_.rate_limit,
                     tokens_ + options_.rate_limit *
                                   std::chrono::duration<double>(now - tokens_at_).count());
  tokens_at_ = now;
  tokens_ -= static_cast<double>(n);
  if (tokens_ < 0) {
    // Wait out the debt. WaitForWork returns early on a NOTIFY, so loop to the deadline.
    const auto deadline =
        now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                  std::chrono::duration<double>(-tokens_ / options_.rate_limit));
    while (!stop_.load() && clock_->Monotonic() < deadline)
      WaitForWork(std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - clock_->Monotonic()) +
                  std::chrono::milliseconds(1));
  }
}

BatchOutcome Relay::Impl::PublishRows(const std::vector<OutboxRow>& rows, bool* broker_down) {
  BatchOutcome out;
  *broker_down = false;
  // Group rows by key, in claim (= sequence) order. Wave k carries the k-th row of every key,
  // so a key's next row goes out only after its previous one was confirmed.
  std::map<std::pair<std::string_view, std::string_view>, std::vector<size_t>> groups;
  for (size_t i = 0; i < rows.size(); ++i)
    groups[{rows[i].message.topic, rows[i].message.subject}].push_back(i);
  std::vector<std::vector<size_t>*> live;
  for (auto& [k, v] : groups) live.push_back(&v);
  size_t wave_index = 0;

  while (!live.empty() && !stop_.load()) {
    std::vector<size_t> wave;
    if (options_.strict_key_order) {
      for (auto* g : live) wave.push_back((*g)[wave_index]);
    } else {
      for (auto* g : live)
        for (size_t j = wave_index; j < g->size(); ++j) wave.push_back((*g)[j]);
    }
    std::sort(wave.begin(), wave.end());
    if (!LeaseCoversPublish()) break;  // rows stay untouched; the next owner publishes them

    std::vector<size_t> to_send;
    std::vector<const Message*> messages;
    std::vector<size_t> stopped_keys_rows;  // rows whose key stops in this wave
    for (size_t i : wave) {
      const OutboxRow& row = rows[i];
      if (!leaser_.Owns(row.slot)) {
        stopped_keys_rows.push_back(i);
        continue;
      }
      if (row.expired) {
        out.dead.push_back({i, "expired before it could be published", "expired", false});
        continue;
      }
      to_send.push_back(i);
      messages.push_back(&row.message);
    }
    Throttle(messages.size());
    std::vector<broker::DeliveryResult> results;
    if (!messages.empty()) {
      Failpoint("relay.before_publish");
      results = publisher_->PublishBatch(messages, options_.publish_timeout);
      Failpoint("relay.after_publish");  // the broker answered; the rows are not deleted yet
    }

    std::set<size_t> failed_rows(stopped_keys_rows.begin(), stopped_keys_rows.end());
    size_t ok = 0, retriable = 0;
    const auto now = clock_->Now();
    for (size_t j = 0; j < to_send.size(); ++j) {
      const size_t i = to_send[j];
      const Status& st = j < results.size() ? results[j].status
                                            : Status::Internal("publisher returned too few results");
      const OutboxRow& row = rows[i];
      if (st.ok()) {
        ++ok;
        out.published.push_back(i);
        if (row.attempts > 0) stats_.retried.fetch_add(1);
        if (observer_)
          observer_->OnConfirmed(
              std::chrono::duration_cast<std::chrono::milliseconds>(now - row.created_at));
        continue;
      }
      failed_rows.insert(i);
      if (st.IsRetriable()) {
        ++retriable;
        stats_.failed.fetch_add(1);
        if (options_.max_attempts > 0 && row.attempts + 1 >= options_.max_attempts) {
          out.dead.push_back({i,
                              "gave up after " + std::to_string(row.attempts + 1) +
                                  " attempts: " + st.ToString(),
                              "gave_up", true});
        } else {
          out.retry.push_back({i, st.ToString(), retry_backoff_.Delay(row.attempts + 1)});
        }
      } else {
        out.dead.push_back({i, st.ToString(), ErrorCodeFor(st), true});
      }
    }
    if (ok == 0 && retriable > 0 && retriable == to_send.size()) {
      // Nothing got through: the broker, not these rows, is the problem. Leave the rows as
      // they are (no per-row bookkeeping) and let the circuit breaker pace the retries.
      *broker_down = true;
      std::erase_if(out.retry, [&](const RetryOutcome& r) { return failed_rows.count(r.row); });
      break;
    }
    // Keys whose row failed stop here; the others continue with their next row.
    ++wave_index;
    std::vector<std::vector<size_t>*> next;
    for (auto* g : live) {
      if (failed_rows.count((*g)[wave_index - 1])) continue;
      if (!options_.strict_key_order) continue;  // all rows were sent in one wave
      if (wave_index < g->size()) next.push_back(g);
    }
    // A dead-lettered expired row does not stop its key.
    live.swap(next);
  }
  return out;
}

void Relay::Impl::UpdateGauges() {
  stats_.owned_slots.store(static_cast<int64_t>(leaser_.owned().size()));
  const auto now = clock_->Monotonic();
  if (now < next_gauges_) return;
  next_gauges_ = now + std::chrono::seconds(2);
  int64_t age = 0, parked = 0;
  if (store_.ReadGauges(&age, &parked).ok()) {
    stats_.oldest_age_ms.store(age);
    stats_.parked_keys.store(parked);
  }
}

Result<size_t> Relay::Impl::RunOnce() {
  if (observer_) observer_->OnCycle();
  CONVERGE_RETURN_IF_ERROR(EnsureConnected());
  CONVERGE_RETURN_IF_ERROR(leaser_.Maintain());
  stats_.ready.store(leaser_.owned().empty() ? 0 : 1);
  UpdateGauges();
  const auto now = clock_->Monotonic();
  if (now < breaker_until_) return static_cast<size_t>(0);
  if (breaker_until_ != std::chrono::steady_clock::time_point{}) {
    // Half-open: ask the broker before claiming anything.
    Status st = publisher_->CheckConnected(std::chrono::milliseconds(2000));
    if (!st.ok()) {
      breaker_until_ = clock_->Monotonic() + breaker_backoff_.Delay(++breaker_opens_);
      log_.LogEvery("relay.breaker", std::chrono::seconds(30), Level::kWarn,
               "broker still unreachable; circuit breaker stays open",
               {{"broker", publisher_->Name()}, {"error", st.ToString()}});
      return static_cast<size_t>(0);
    }
    log_.Log(Level::kInfo, "broker reachable again; circuit breaker closed",
        {{"broker", publisher_->Name()}});
    breaker_until_ = {};
    breaker_opens_ = 0;
    breaker_failures_ = 0;
    stats_.breaker_open.store(0);
  }
  CONVERGE_ASSIGN_OR_RETURN(auto rows, store_.Claim(leaser_.owned(), options_.batch_size));
  if (rows.empty()) return static_cast<size_t>(0);
  stats_.batches.fetch_add(1);
  if (observer_) observer_->OnBatch(rows.size());

  bool broker_down = false;
  BatchOutcome outcome = PublishRows(rows, &broker_down);
  auto done = store_.Complete(rows, outcome);
  Failpoint("relay.after_complete");
  if (!done.ok()) {
    // The broker has the rows but the deletes did not commit: they will be published again
    // (duplicates, never losses). Consumers dedupe by message id.
    return done.status();
  }
  stats_.published.fetch_add(done->deleted);
  stats_.fenced.fetch_add(done->fenced);
  stats_.dead_lettered.fetch_add(outcome.dead.size());
  for (const auto& d : outcome.dead)
    log_.Log(Level::kWarn, "dead-lettered a message",
        {{"message_id", rows[d.row].message.id}, {"topic", rows[d.row].message.topic},
         {"key", rows[d.row].message.subject}, {"reason", d.reason},
         {"key_parked", d.park_key}});
  if (broker_down) {
    if (++breaker_failures_ >= options_.breaker_failures) {
      breaker_until_ = clock_->Monotonic() + breaker_backoff_.Delay(++breaker_opens_);
      stats_.breaker_open.store(1);
      log_.Log(Level::kError, "broker unreachable; circuit breaker open",
          {{"broker", publisher_->Name()}, {"failed_batches", breaker_failures_}});
    }
  } else if (!outcome.published.empty()) {
    breaker_failures_ = 0;
  }
  return rows.size();
}

Status Relay::Impl::Run() {
  CONVERGE_RETURN_IF_ERROR(options_.Validate());
  log_.Log(Level::kInfo, "relay starting",
      {{"instance", instance_id_}, {"broker", publisher_->Name()},
       {"batch_size", options_.batch_size}, {"strict_key_order", options_.strict_key_order}});
  while (!stop_.load()) {
    auto r = RunOnce();
    if (!r.ok()) {
      stats_.ready.store(0);
      const auto delay = reconnect_backoff_.Delay(++reconnect_attempt_);
      log_.LogEvery("relay.loop", std::chrono::seconds(10), Level::kWarn, "relay cycle failed",
               {{"error", r.status().ToString()}, {"retry_in_ms", delay.count()}});
      Sleep(delay);
      continue;
    }
    reconnect_attempt_ = 0;
    if (*r == static_cast<size_t>(options_.batch_size)) continue;  // more is waiting
    if (clock_->Monotonic() < breaker_until_) {
      Sleep(std::chrono::duration_cast<std::chrono::milliseconds>(breaker_until_ -
                                                                  clock_->Monotonic()));
      continue;
    }
    if (*r > 0) continue;  // look again at once: the batch may have unblocked later rows
    WaitForWork(options_.poll_interval);
  }
  log_.Log(Level::kInfo, "relay stopping: releasing slot leases", {{"instance", instance_id_}});
  publisher_->Close(std::chrono::milliseconds(5000));
  Status st = leaser_.ReleaseAll();
  if (!st.ok())
    log_.Log(Level::kWarn, "could not release leases; they expire by themselves",
        {{"error", st.ToString()}});
  return Status::Ok();
}

Relay::Relay(RelayOptions options, std::unique_ptr<broker::Publisher> publisher,
             RelayObserver* observer, Clock* clock)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(publisher), observer, clock)) {}
Relay::~Relay() = default;
Status Relay::Run() { return impl_->Run(); }
void Relay::Stop() { impl_->Stop(); }
Result<size_t> Relay::RunOnce() { return impl_->RunOnce(); }
const RelayStats& Relay::stats() const { return impl_->stats_; }
const std::string& Relay::instance_id() const { return impl_->instance_id(); }

}  // namespace converge::outbox
