#include "converge/outbox/relay.h"

#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <condition_variable>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
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

Result<std::string> TopicFilterRegex(const std::string& filter) {
  if (filter.empty()) return Status::InvalidArgument("relay target topic filter must not be empty");
  std::string re = "^";
  size_t start = 0;
  while (true) {
    const size_t slash = filter.find('/', start);
    const std::string level =
        filter.substr(start, slash == std::string::npos ? std::string::npos : slash - start);
    if (level == "#") {
      if (slash != std::string::npos)
        return Status::InvalidArgument("relay target topic filter \"" + filter +
                                       "\": '#' must be the last level");
      // "a/#" also matches "a"; "#" matches everything.
      if (start == 0) return std::string("^.*$");
      re.pop_back();  // the '/' before '#'
      re += "(/.*)?";
      break;
    }
    if (level == "+") {
      re += "[^/]*";
    } else {
      if (level.find_first_of("+#") != std::string::npos)
        return Status::InvalidArgument("relay target topic filter \"" + filter +
                                       "\": '+' and '#' must fill a whole level");
      for (char c : level) {
        if (std::string_view("\\.^$|?*+()[]{}").find(c) != std::string_view::npos) re += '\\';
        re += c;
      }
    }
    if (slash == std::string::npos) break;
    re += '/';
    start = slash + 1;
  }
  return re + "$";
}

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

// One broker target: its own claim filter, store (PostgreSQL connection), backoffs and breaker.
// A target's state is touched only by the thread that runs it.
struct Target {
  Target(std::unique_ptr<broker::Publisher> p, const RelayOptions& o, const std::string& id)
      : publisher(std::move(p)),
        store(o.database_url, id),
        retry_backoff(o.retry),
        breaker_backoff(o.breaker_backoff),
        reconnect_backoff(BackoffPolicy{std::chrono::milliseconds(100),
                                        std::chrono::milliseconds(5000), 2.0, 0.5}) {}
  std::unique_ptr<broker::Publisher> publisher;
  std::vector<std::unique_ptr<broker::Publisher>> more_publishers;  // see RelayTarget
  // Guards what the publishing threads share: retry_backoff, tokens, tokens_at.
  std::mutex shared_mu;
  TopicFilter filter;
  OutboxStore store;
  Backoff retry_backoff;
  Backoff breaker_backoff;
  Backoff reconnect_backoff;
  int reconnect_attempt = 0;
  int breaker_failures = 0;  // consecutive batches with no success
  int breaker_opens = 0;
  std::chrono::steady_clock::time_point breaker_until{};
  std::atomic<bool> breaker_open{false};  // mirrors breaker_until for other threads
  std::string name;                       // publisher->Name(), fixed at construction
  double tokens = 0;
  std::chrono::steady_clock::time_point tokens_at{};
  bool busy = false;  // counted in batches_in_flight_ (a batch claimed and not yet completed)
};

// A claimed batch on its way through a target's pipeline.
struct Batch {
  std::vector<OutboxRow> rows;
  BatchOutcome outcome;
  bool broker_down = false;
  std::chrono::microseconds claim_time{0}, publish_time{0};  // for the debug log
  // OutboxStore::ExcludedKey of every row: a claim made while this batch is not completed yet
  // must not take any later row of these keys.
  std::vector<std::string> Keys() const {
    std::vector<std::string> keys;
    keys.reserve(rows.size());
    for (const auto& r : rows)
      keys.push_back(OutboxStore::ExcludedKey(r.message.topic, r.message.subject));
    return keys;
  }
};

// A target's publishing thread: publishes one batch at a time (Publisher calls stay on one
// thread) while the target's own thread completes the previous batch and claims the next.
class PublishStage {
 public:
  using Work = std::function<void(Batch&)>;
  using Done = std::function<void()>;
  PublishStage(Work work, Done done)
      : work_(std::move(work)), done_(std::move(done)), thread_([this] { Loop(); }) {}
  ~PublishStage() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // Hands `batch` over; it must stay alive and untouched until finished() is true.
  void Start(Batch* batch) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      job_ = batch;
      finished_ = false;
    }
    cv_.notify_all();
  }
  bool finished() const {
    std::lock_guard<std::mutex> lock(mu_);
    return finished_;
  }
  void WaitFinished() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return finished_; });
  }

 private:
  void Loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return quit_ || job_ != nullptr; });
      if (job_ == nullptr) return;  // quit with nothing to do
      Batch* batch = job_;
      lock.unlock();
      work_(*batch);
      lock.lock();
      job_ = nullptr;
      finished_ = true;
      cv_.notify_all();
      lock.unlock();
      done_();
      lock.lock();
    }
  }

  Work work_;
  Done done_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  Batch* job_ = nullptr;
  bool finished_ = false;
  bool quit_ = false;
  std::thread thread_;  // last: starts after the members above exist
};

class Relay::Impl {
 public:
  Impl(RelayOptions options, std::vector<RelayTarget> targets, RelayObserver* observer,
       Clock* clock)
      : options_(std::move(options)),
        observer_(observer),
        clock_(clock),
        instance_id_(options_.instance_id.empty() ? DefaultInstanceId() : options_.instance_id),
        leaser_(options_.database_url, instance_id_,
                LeaseOptions{options_.lease_ttl, options_.lease_renew_interval,
                             options_.takeover_grace},
                clock) {
    if (::pipe2(wake_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) wake_pipe_[0] = wake_pipe_[1] = -1;
    if (::pipe2(gauges_pipe_, O_NONBLOCK | O_CLOEXEC) != 0) gauges_pipe_[0] = gauges_pipe_[1] = -1;
    targets_status_ = BuildTargets(std::move(targets));
  }

  ~Impl() {
    if (wake_pipe_[0] >= 0) ::close(wake_pipe_[0]);
    if (wake_pipe_[1] >= 0) ::close(wake_pipe_[1]);
    for (int fd : gauges_pipe_)
      if (fd >= 0) ::close(fd);
  }

  Status Run();
  void Stop() {
    stop_.store(true);
    for (int fd : {wake_pipe_[1], gauges_pipe_[1]}) {
      if (fd < 0) continue;
      char c = 1;
      [[maybe_unused]] auto n = ::write(fd, &c, 1);
    }
  }
  Result<size_t> RunOnce();

  RelayStats stats_;
  const std::string& instance_id() const { return instance_id_; }
  std::vector<std::pair<std::string, bool>> TargetBreakers() const {
    std::vector<std::pair<std::string, bool>> out;
    for (const auto& t : targets_) out.emplace_back(t->name, t->breaker_open.load());
    return out;
  }

 private:
  Status BuildTargets(std::vector<RelayTarget> targets);
  void EnsureListener();
  Status ConnectListener();
  // Waits for a notification, Stop(), or the timeout (the thread that owns the listener).
  void WaitForWork(std::chrono::milliseconds timeout);
  // A target's wait: WaitForWork with one target; with several, a wake-up from the thread that
  // owns the listener (or Stop(), or the timeout).
  void Wait(std::chrono::milliseconds timeout);
  void Sleep(std::chrono::milliseconds d) { Wait(d); }
  Result<size_t> RunTarget(Target& t);
  // The pipelined loop of one target until Stop(): batch n is at the broker (publishing
  // thread) while this thread completes batch n-1 and claims batch n+1, which excludes the keys
  // of every batch not yet completed. `owns_listener`: the only target, which also owns the
  // LISTEN connection.
  void LoopTarget(Target& t, bool owns_listener);
  // Connects, maintains the leases, refreshes gauges and runs the circuit breaker; sets
  // `*slots` and whether a claim may be made now.
  Status Prepare(Target& t, std::vector<int>* slots, bool* may_claim);
  // Records a published batch's outcome (delete, retry, dead-letter) and its effect on the
  // circuit breaker.
  Status Finish(Target& t, Batch& b);
  void SetBusy(Target& t, bool busy);
  // Wakes the target threads (a publishing thread finished a batch).
  void WakeTargets();
  // Waits for a NOTIFY, Stop(), the timeout, or `any_finished()` becoming true (a publishing
  // thread finished its batch).
  void WaitWork(const std::function<bool()>& any_finished, std::chrono::milliseconds timeout);
  // Publishes the rows in waves and decides each row's outcome.
  BatchOutcome PublishRows(Target& t, broker::Publisher& publisher,
                           const std::vector<OutboxRow>& rows, bool* broker_down);
  bool LeaseCoversPublish();
  bool Owns(int slot) {
    std::lock_guard<std::mutex> lock(lease_mu_);
    return leaser_.Owns(slot);
  }
  void Throttle(Target& t, size_t n);
  void UpdateOwnedSlots();
  // Reads the gauges that need a query every 2 s on its own connection until Stop().
  void GaugesLoop();

  RelayOptions options_;
  std::vector<std::unique_ptr<Target>> targets_;
  Status targets_status_;
  RelayObserver* observer_;
  Clock* clock_;
  std::string instance_id_;
  // The leases are shared by the targets. A slot is given back (rebalancing) only while no
  // target has a batch in flight, so nothing of a released slot can still be in the broker's
  // hands; renewals and acquisitions happen whenever due.
  std::mutex lease_mu_;
  SlotLeaser leaser_;
  int batches_in_flight_ = 0;  // guarded by lease_mu_
  std::unique_ptr<pqxx::connection> listener_;
  std::mutex wake_mu_;
  std::condition_variable wake_cv_;
  uint64_t wake_gen_ = 0;          // guarded by wake_mu_
  int gauges_pipe_[2] = {-1, -1};  // Stop() writes to it: wakes GaugesLoop
  Logger log_{"relay"};
  std::atomic<bool> stop_{false};
  int wake_pipe_[2] = {-1, -1};
};

Status Relay::Impl::BuildTargets(std::vector<RelayTarget> targets) {
  if (targets.empty()) return Status::InvalidArgument("relay: at least one target is needed");
  int catch_all = 0;
  std::vector<std::vector<std::string>> regexes;
  for (auto& t : targets) {
    if (!t.publisher) return Status::InvalidArgument("relay: a target has no publisher");
    for (const auto& p : t.more_publishers)
      if (!p) return Status::InvalidArgument("relay: a target has a null publisher");
    if (t.topics.empty()) ++catch_all;
    std::vector<std::string> res;
    for (const auto& f : t.topics) {
      CONVERGE_ASSIGN_OR_RETURN(auto re, TopicFilterRegex(f));
      res.push_back(std::move(re));
    }
    regexes.push_back(std::move(res));
  }
  if (catch_all > 1)
    return Status::InvalidArgument(
        "relay: at most one target may take all remaining topics (give the others topic "
        "filters)");
  for (size_t i = 0; i < targets.size(); ++i) {
    auto t = std::make_unique<Target>(std::move(targets[i].publisher), options_, instance_id_);
    t->name = t->publisher->Name();
    t->more_publishers = std::move(targets[i].more_publishers);
    t->filter.include = regexes[i];
    // A topic belongs to the first explicit target that matches it, else to the catch-all.
    for (size_t j = 0; j < targets.size(); ++j) {
      if (j == i || regexes[j].empty()) continue;
      if (regexes[i].empty() || j < i)
        t->filter.exclude.insert(t->filter.exclude.end(), regexes[j].begin(), regexes[j].end());
    }
    targets_.push_back(std::move(t));
  }
  return Status::Ok();
}

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

void Relay::Impl::EnsureListener() {
  if (!listener_) {
    // The listener is only a wake-up hint; polling covers for it when it is down.
    Status st = ConnectListener();
    if (!st.ok())
      log_.LogEvery("relay.listen", std::chrono::seconds(30), Level::kWarn,
                    "LISTEN connection failed; polling only", {{"error", st.ToString()}});
  }
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

void Relay::Impl::Wait(std::chrono::milliseconds timeout) {
  if (targets_.size() == 1) return WaitForWork(timeout);
  std::unique_lock<std::mutex> lock(wake_mu_);
  const uint64_t gen = wake_gen_;
  wake_cv_.wait_for(lock, timeout, [&] { return stop_.load() || wake_gen_ != gen; });
}

bool Relay::Impl::LeaseCoversPublish() {
  // Rows may be handed to the broker only while the lease outlives the broker's delivery
  // timeout: a message the broker could still write after the lease ends could overtake the
  // next owner's publishes of the same key.
  const auto margin = options_.publish_timeout + std::chrono::milliseconds(500);
  std::lock_guard<std::mutex> lock(lease_mu_);
  if (clock_->Monotonic() + margin < leaser_.valid_until()) return true;
  // Inside a batch: renew, never give a slot back.
  Status st = leaser_.Maintain(/*force=*/true, /*allow_release=*/false);
  if (!st.ok()) {
    log_.LogEvery("relay.lease", std::chrono::seconds(10), Level::kWarn, "cannot renew slot leases",
                  {{"error", st.ToString()}});
    return false;
  }
  return clock_->Monotonic() + margin < leaser_.valid_until();
}

void Relay::Impl::Throttle(Target& t, size_t n) {
  if (options_.rate_limit <= 0) return;
  std::unique_lock<std::mutex> lock(t.shared_mu);  // publishing threads share the bucket
  const auto now = clock_->Monotonic();
  if (t.tokens_at == std::chrono::steady_clock::time_point{}) {
    t.tokens_at = now;
    t.tokens = options_.rate_limit;  // one second of burst
  }
  t.tokens = std::min(
      options_.rate_limit,
      t.tokens + options_.rate_limit * std::chrono::duration<double>(now - t.tokens_at).count());
  t.tokens_at = now;
  t.tokens -= static_cast<double>(n);
  if (t.tokens < 0) {
    // Wait out the debt, in slices so that Stop() is noticed. This runs on the target's
    // publishing thread, which must not touch the LISTEN connection (Wait would).
    const auto deadline = now + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                    std::chrono::duration<double>(-t.tokens / options_.rate_limit));
    lock.unlock();
    while (!stop_.load() && clock_->Monotonic() < deadline)
      std::this_thread::sleep_for(std::min<std::chrono::steady_clock::duration>(
          deadline - clock_->Monotonic() + std::chrono::milliseconds(1),
          std::chrono::milliseconds(50)));
  }
}

BatchOutcome Relay::Impl::PublishRows(Target& t, broker::Publisher& publisher,
                                      const std::vector<OutboxRow>& rows, bool* broker_down) {
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
      if (!Owns(row.slot)) {
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
    Throttle(t, messages.size());
    std::vector<broker::DeliveryResult> results;
    if (!messages.empty()) {
      Failpoint("relay.before_publish");
      results = publisher.PublishBatch(messages, options_.publish_timeout);
      Failpoint("relay.after_publish");  // the broker answered; the rows are not deleted yet
    }

    std::set<size_t> failed_rows(stopped_keys_rows.begin(), stopped_keys_rows.end());
    size_t ok = 0, retriable = 0;
    const auto now = clock_->Now();
    for (size_t j = 0; j < to_send.size(); ++j) {
      const size_t i = to_send[j];
      const Status& st = j < results.size()
                             ? results[j].status
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
          out.dead.push_back(
              {i,
               "gave up after " + std::to_string(row.attempts + 1) + " attempts: " + st.ToString(),
               "gave_up", true});
        } else {
          std::lock_guard<std::mutex> lock(t.shared_mu);
          out.retry.push_back({i, st.ToString(), t.retry_backoff.Delay(row.attempts + 1)});
        }
      } else if (st.message().find("expired before it could be published") != std::string::npos) {
        // Expired between the claim and the publish (MQTT message expiry): like an expired
        // row, dead-lettered without parking the key.
        out.dead.push_back({i, st.ToString(), "expired", false});
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

void Relay::Impl::UpdateOwnedSlots() {
  std::lock_guard<std::mutex> lock(lease_mu_);
  stats_.owned_slots.store(static_cast<int64_t>(leaser_.owned().size()));
}

// The query finds the oldest row through the outbox's primary key, which after a drain holds
// the entries of deleted rows until VACUUM: it took 25-56 ms (p90) in the benchmark. On the
// claim connection that stalled the publishing loop every 2 s; here it stalls nothing.
void Relay::Impl::GaugesLoop() {
  OutboxStore store(options_.database_url, instance_id_);
  while (!stop_.load()) {
    int64_t age = 0, parked = 0;
    // A failure (database down) keeps the last values; the loop's own errors are logged.
    if ((store.connected() || store.Connect().ok()) && store.ReadGauges(&age, &parked).ok()) {
      stats_.oldest_age_ms.store(age);
      stats_.parked_keys.store(parked);
    }
    // Stop() writes to the pipe (async-signal-safe); a byte written before this poll stays.
    pollfd p{gauges_pipe_[0], POLLIN, 0};
    ::poll(&p, 1, 2000);
  }
}

void Relay::Impl::SetBusy(Target& t, bool busy) {
  if (t.busy == busy) return;
  t.busy = busy;
  std::lock_guard<std::mutex> lock(lease_mu_);
  batches_in_flight_ += busy ? 1 : -1;
}

Status Relay::Impl::Prepare(Target& t, std::vector<int>* slots, bool* may_claim) {
  *may_claim = false;
  if (!t.store.connected()) CONVERGE_RETURN_IF_ERROR(t.store.Connect());
  {
    std::lock_guard<std::mutex> lock(lease_mu_);
    const bool idle = batches_in_flight_ == 0;
    // Surplus slots are given back only while no target has a batch in flight; a pipeline that
    // never runs empty is drained for it (no new claims until the release happened).
    CONVERGE_RETURN_IF_ERROR(
        leaser_.Maintain(/*force=*/idle && leaser_.release_pending(), /*allow_release=*/idle));
    *slots = leaser_.owned();
    if (leaser_.release_pending()) return Status::Ok();
  }
  stats_.ready.store(slots->empty() ? 0 : 1);
  UpdateOwnedSlots();
  const auto now = clock_->Monotonic();
  if (now < t.breaker_until) return Status::Ok();
  if (t.breaker_until != std::chrono::steady_clock::time_point{}) {
    // Half-open: ask the broker before claiming anything.
    Status st = t.publisher->CheckConnected(std::chrono::milliseconds(2000));
    if (!st.ok()) {
      t.breaker_until = clock_->Monotonic() + t.breaker_backoff.Delay(++t.breaker_opens);
      log_.LogEvery("relay.breaker." + t.publisher->Name(), std::chrono::seconds(30), Level::kWarn,
                    "broker still unreachable; circuit breaker stays open",
                    {{"broker", t.publisher->Name()}, {"error", st.ToString()}});
      return Status::Ok();
    }
    log_.Log(Level::kInfo, "broker reachable again; circuit breaker closed",
             {{"broker", t.publisher->Name()}});
    t.breaker_until = {};
    t.breaker_opens = 0;
    t.breaker_failures = 0;
    t.breaker_open.store(false);
    stats_.breaker_open.fetch_sub(1);
  }
  *may_claim = !slots->empty();
  return Status::Ok();
}

Status Relay::Impl::Finish(Target& t, Batch& b) {
  auto done = t.store.Complete(b.rows, b.outcome);
  Failpoint("relay.after_complete");
  if (!done.ok()) {
    // The broker has the rows but the deletes did not commit: they will be published again
    // (duplicates, never losses). Consumers dedupe by message id.
    return done.status();
  }
  stats_.published.fetch_add(done->deleted);
  stats_.fenced.fetch_add(done->fenced);
  stats_.dead_lettered.fetch_add(b.outcome.dead.size());
  for (const auto& d : b.outcome.dead)
    log_.Log(Level::kWarn, "dead-lettered a message",
             {{"message_id", b.rows[d.row].message.id},
              {"topic", b.rows[d.row].message.topic},
              {"key", b.rows[d.row].message.subject},
              {"broker", t.publisher->Name()},
              {"reason", d.reason},
              {"key_parked", d.park_key}});
  if (b.broker_down) {
    if (++t.breaker_failures >= options_.breaker_failures &&
        t.breaker_until == std::chrono::steady_clock::time_point{}) {
      t.breaker_until = clock_->Monotonic() + t.breaker_backoff.Delay(++t.breaker_opens);
      t.breaker_open.store(true);
      stats_.breaker_open.fetch_add(1);
      log_.Log(Level::kError, "broker unreachable; circuit breaker open",
               {{"broker", t.publisher->Name()}, {"failed_batches", t.breaker_failures}});
    }
  } else if (!b.outcome.published.empty()) {
    t.breaker_failures = 0;
  }
  return Status::Ok();
}

Result<size_t> Relay::Impl::RunTarget(Target& t) {
  std::vector<int> slots;
  bool may_claim = false;
  CONVERGE_RETURN_IF_ERROR(Prepare(t, &slots, &may_claim));
  if (!may_claim) return static_cast<size_t>(0);
  // From the claim to the completion this target has a batch in flight: no slot is given back
  // meanwhile (see lease_mu_).
  SetBusy(t, true);
  struct NotBusy {
    Impl* impl;
    Target& t;
    ~NotBusy() { impl->SetBusy(t, false); }
  } not_busy{this, t};
  Batch b;
  CONVERGE_ASSIGN_OR_RETURN(b.rows, t.store.Claim(slots, options_.batch_size, t.filter));
  if (b.rows.empty()) return static_cast<size_t>(0);
  stats_.batches.fetch_add(1);
  if (observer_) observer_->OnBatch(b.rows.size());
  b.outcome = PublishRows(t, *t.publisher, b.rows, &b.broker_down);
  CONVERGE_RETURN_IF_ERROR(Finish(t, b));
  return b.rows.size();
}

Result<size_t> Relay::Impl::RunOnce() {
  CONVERGE_RETURN_IF_ERROR(targets_status_);
  if (observer_) observer_->OnCycle();
  EnsureListener();
  size_t total = 0;
  for (auto& t : targets_) {
    CONVERGE_ASSIGN_OR_RETURN(size_t n, RunTarget(*t));
    total += n;
  }
  return total;
}

void Relay::Impl::WakeTargets() {
  if (targets_.size() == 1) {
    if (wake_pipe_[1] >= 0) {
      char c = 2;
      [[maybe_unused]] auto n = ::write(wake_pipe_[1], &c, 1);
    }
    return;
  }
  {
    std::lock_guard<std::mutex> lock(wake_mu_);
    ++wake_gen_;
  }
  wake_cv_.notify_all();
}

void Relay::Impl::WaitWork(const std::function<bool()>& any_finished,
                           std::chrono::milliseconds timeout) {
  if (targets_.size() == 1) {
    // A stage writes to the wake pipe when it finishes; a byte written before this poll is
    // still there, so nothing is lost.
    if (any_finished && any_finished()) return;
    return WaitForWork(timeout);
  }
  std::unique_lock<std::mutex> lock(wake_mu_);
  const uint64_t gen = wake_gen_;
  wake_cv_.wait_for(lock, timeout, [&] {
    return stop_.load() || wake_gen_ != gen || (any_finished && any_finished());
  });
}

void Relay::Impl::LoopTarget(Target& t, bool owns_listener) {
  // The pipeline. One publishing thread (stage) per publisher of the target; `flying[i]` is
  // the batch at stage i, `done` holds batches published and waiting for their outcome to be
  // recorded, `next` a batch claimed and waiting for a free stage. A claim excludes the keys
  // of every flying and done batch (their rows are still in the table, and a later row of
  // their keys must not be published before their outcome is recorded: a failed row blocks
  // its key), so the batches at the broker have disjoint keys.
  std::vector<broker::Publisher*> publishers{t.publisher.get()};
  for (auto& p : t.more_publishers) publishers.push_back(p.get());
  std::vector<std::optional<Batch>> flying(publishers.size());
  std::vector<std::unique_ptr<PublishStage>> stages;
  for (size_t i = 0; i < publishers.size(); ++i) {
    stages.push_back(std::make_unique<PublishStage>(
        [this, &t, p = publishers[i]](Batch& b) {
          const auto start = clock_->Monotonic();
          b.outcome = PublishRows(t, *p, b.rows, &b.broker_down);
          b.publish_time =
              std::chrono::duration_cast<std::chrono::microseconds>(clock_->Monotonic() - start);
        },
        [this] { WakeTargets(); }));
  }
  std::vector<Batch> done;
  std::optional<Batch> next;
  auto any_finished = [&] {
    for (size_t i = 0; i < stages.size(); ++i)
      if (flying[i] && stages[i]->finished()) return true;
    return false;
  };
  auto free_stage = [&]() -> int {
    for (size_t i = 0; i < stages.size(); ++i)
      if (!flying[i]) return static_cast<int>(i);
    return -1;
  };
  auto count_flying = [&] {
    size_t n = 0;
    for (const auto& f : flying) n += f.has_value();
    return n;
  };
  bool more_waiting = false;  // the last claim was full: a backlog
  auto failed = [&](const Status& st) {
    stats_.ready.store(0);
    const auto delay = t.reconnect_backoff.Delay(++t.reconnect_attempt);
    log_.LogEvery("relay.loop." + t.publisher->Name(), std::chrono::seconds(10), Level::kWarn,
                  "relay cycle failed",
                  {{"broker", t.publisher->Name()},
                   {"error", st.ToString()},
                   {"retry_in_ms", delay.count()}});
    return delay;
  };
  while (true) {
    const bool stopping = stop_.load();
    for (size_t i = 0; i < stages.size(); ++i) {
      if (flying[i] && stages[i]->finished()) {
        done.push_back(std::move(*flying[i]));
        flying[i].reset();
      }
    }
    if (stopping) next.reset();  // claimed, not published: simply left in the table
    if (stopping && count_flying() == 0 && done.empty()) break;
    if (owns_listener) {
      if (observer_) observer_->OnCycle();
      EnsureListener();
    }
    std::optional<std::chrono::milliseconds> backoff;
    const bool broker_failed_all =
        std::any_of(done.begin(), done.end(), [](const Batch& b) { return b.broker_down; });

    // Claim when a stage is free (the batch goes out at once), or, with every stage busy,
    // when the last claim was full (a backlog: the claim overlaps with the publishes). With
    // no backlog and every stage busy the claim waits for a free stage, so that it takes
    // every row committed meanwhile.
    if (!stopping && !next && (free_stage() >= 0 || more_waiting)) {
      more_waiting = false;
      std::vector<int> slots;
      bool may_claim = false;
      Status st = Prepare(t, &slots, &may_claim);
      if (!st.ok()) {
        backoff = failed(st);
      } else if (may_claim && !broker_failed_all) {
        std::vector<std::string> exclude;
        for (const auto& f : flying) {
          if (!f) continue;
          auto k = f->Keys();
          exclude.insert(exclude.end(), k.begin(), k.end());
        }
        for (const auto& d : done) {
          auto k = d.Keys();
          exclude.insert(exclude.end(), k.begin(), k.end());
        }
        SetBusy(t, true);
        const auto claim_start = clock_->Monotonic();
        auto rows = t.store.Claim(slots, options_.batch_size, t.filter, exclude);
        if (!rows.ok()) {
          backoff = failed(rows.status());
        } else {
          more_waiting = static_cast<int>(rows->size()) == options_.batch_size;
          if (!rows->empty()) {
            next.emplace();
            next->rows = std::move(rows).value();
            next->claim_time = std::chrono::duration_cast<std::chrono::microseconds>(
                clock_->Monotonic() - claim_start);
            stats_.batches.fetch_add(1);
            if (observer_) observer_->OnBatch(next->rows.size());
          }
        }
      }
    }
    // The broker failed a whole batch: let its completion run the circuit breaker before
    // anything else goes out (the rows claimed meanwhile stay in the table).
    if (next && broker_failed_all) next.reset();
    // Hand the claimed batch to a free publishing thread. A full batch (a backlog) waits until
    // no batch is at the broker: there the database, not the broker, is the bottleneck, and
    // every row at the broker is one more row each claim has to skip. The other publishers
    // take the small batches of moderate rates, which then need not wait for the acks of the
    // batch before them.
    const bool next_full = next && static_cast<int>(next->rows.size()) >= options_.batch_size;
    if (const int i = free_stage(); next && i >= 0 && !stopping &&
                                    clock_->Monotonic() >= t.breaker_until &&
                                    !(next_full && count_flying() > 0)) {
      flying[i] = std::move(next);
      next.reset();
      stages[i]->Start(&*flying[i]);
    }
    // Record the outcome of the published batches (overlaps with the batches at the broker).
    for (auto& d : done) {
      const auto finish_start = clock_->Monotonic();
      Status st = Finish(t, d);
      if (LogEnabled(Level::kDebug))
        log_.Log(Level::kDebug, "batch",
                 {{"broker", t.name},
                  {"rows", d.rows.size()},
                  {"claim_us", d.claim_time.count()},
                  {"publish_us", d.publish_time.count()},
                  {"complete_us", std::chrono::duration_cast<std::chrono::microseconds>(
                                      clock_->Monotonic() - finish_start)
                                      .count()},
                  {"at_broker", count_flying()}});
      if (!st.ok()) {
        // Its rows stay in the table and are published again (duplicates, never losses).
        // Claims made so far excluded its keys; a later claim sees them again.
        backoff = failed(st);
      } else {
        t.reconnect_attempt = 0;
      }
    }
    // A batch that completed released its keys: rows a claim made while it was at the broker had
    // to skip may be claimable now, so claim again before waiting. Without this, a backlog whose
    // batches each cover every key (a claim during a publish found nothing) moved one batch per
    // poll interval: measured over MQTT, 20,000 rows on 500 keys took 14.4 s, of which the relay
    // worked 4.5 s.
    const bool released_keys = !done.empty();
    done.clear();
    if (next && clock_->Monotonic() < t.breaker_until) next.reset();  // the breaker opened
    const size_t at_broker = count_flying();
    if (at_broker == 0 && !next) SetBusy(t, false);

    if (stopping && at_broker > 0) {
      // Stop(): the publishing threads end their batches after the current wave.
      for (size_t i = 0; i < stages.size(); ++i)
        if (flying[i]) stages[i]->WaitFinished();
      continue;
    }
    if (backoff) {
      // A failed statement: wait (the batches at the broker go on) and start over.
      WaitWork(nullptr, *backoff);
      continue;
    }
    if (at_broker > 0) {
      // With a backlog and no batch waiting, claim the next one at once; otherwise wait for
      // a publishing thread to finish (or, with one free, for rows to arrive).
      if (next || (!more_waiting && !released_keys)) WaitWork(any_finished, options_.poll_interval);
      continue;
    }
    if (clock_->Monotonic() < t.breaker_until) {
      Sleep(std::chrono::duration_cast<std::chrono::milliseconds>(t.breaker_until -
                                                                  clock_->Monotonic()));
      continue;
    }
    if (more_waiting || released_keys) continue;
    WaitWork(nullptr, options_.poll_interval);
  }
  SetBusy(t, false);
}

Status Relay::Impl::Run() {
  CONVERGE_RETURN_IF_ERROR(options_.Validate());
  CONVERGE_RETURN_IF_ERROR(targets_status_);
  std::string names;
  for (const auto& t : targets_) {
    if (!names.empty()) names += ',';
    names += t->publisher->Name();
  }
  log_.Log(Level::kInfo, "relay starting",
           {{"instance", instance_id_},
            {"broker", names},
            {"batch_size", options_.batch_size},
            {"strict_key_order", options_.strict_key_order}});
  std::thread gauges([this] { GaugesLoop(); });
  if (targets_.size() == 1) {
    // One target: it runs here and owns the LISTEN connection itself.
    LoopTarget(*targets_[0], /*owns_listener=*/true);
  } else {
    // Bulkheads: one thread per target; this thread owns the LISTEN connection and wakes them.
    std::vector<std::thread> threads;
    for (auto& t : targets_)
      threads.emplace_back([this, &t] { LoopTarget(*t, /*owns_listener=*/false); });
    while (!stop_.load()) {
      if (observer_) observer_->OnCycle();
      EnsureListener();
      WaitForWork(std::min(options_.poll_interval, std::chrono::milliseconds(1000)));
      {
        std::lock_guard<std::mutex> lock(wake_mu_);
        ++wake_gen_;
      }
      wake_cv_.notify_all();
    }
    {
      std::lock_guard<std::mutex> lock(wake_mu_);
      ++wake_gen_;
    }
    wake_cv_.notify_all();
    for (auto& th : threads) th.join();
  }
  gauges.join();  // stop_ is set: it ends after its current query
  log_.Log(Level::kInfo, "relay stopping: releasing slot leases", {{"instance", instance_id_}});
  for (auto& t : targets_) {
    t->publisher->Close(std::chrono::milliseconds(5000));
    for (auto& p : t->more_publishers) p->Close(std::chrono::milliseconds(5000));
  }
  Status st = leaser_.ReleaseAll();
  if (!st.ok())
    log_.Log(Level::kWarn, "could not release leases; they expire by themselves",
             {{"error", st.ToString()}});
  return Status::Ok();
}

namespace {
std::vector<RelayTarget> OneTarget(std::unique_ptr<broker::Publisher> publisher) {
  std::vector<RelayTarget> v;
  v.push_back(RelayTarget{std::move(publisher), {}, {}});
  return v;
}
}  // namespace

Relay::Relay(RelayOptions options, std::unique_ptr<broker::Publisher> publisher,
             RelayObserver* observer, Clock* clock)
    : impl_(std::make_unique<Impl>(std::move(options), OneTarget(std::move(publisher)), observer,
                                   clock)) {}
Relay::Relay(RelayOptions options, std::vector<RelayTarget> targets, RelayObserver* observer,
             Clock* clock)
    : impl_(std::make_unique<Impl>(std::move(options), std::move(targets), observer, clock)) {}
Relay::~Relay() = default;
Status Relay::Run() { return impl_->Run(); }
void Relay::Stop() { impl_->Stop(); }
Result<size_t> Relay::RunOnce() { return impl_->RunOnce(); }
const RelayStats& Relay::stats() const { return impl_->stats_; }
std::vector<std::pair<std::string, bool>> Relay::TargetBreakers() const {
  return impl_->TargetBreakers();
}
const std::string& Relay::instance_id() const { return impl_->instance_id(); }

}  // namespace converge::outbox
