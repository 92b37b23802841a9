#include "converge/consumer/testing/fake_source.h"

#include <thread>

namespace converge::consumer::testing {

using broker::ReceivedRecord;
using broker::TopicPartition;

int64_t FakeSource::Produce(const std::string& topic, int32_t partition, std::string payload,
                            std::vector<std::pair<std::string, std::string>> headers,
                            std::optional<std::string> key) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& log = log_[TopicPartition{topic, partition}];
  ReceivedRecord r;
  r.topic = topic;
  r.partition = partition;
  r.offset = static_cast<int64_t>(log.size());
  r.key = std::move(key);
  r.headers = std::move(headers);
  r.payload = std::move(payload);
  r.broker_time = std::chrono::system_clock::now();
  log.push_back(std::move(r));
  return log.back().offset;
}

void FakeSource::Rebalance(std::vector<TopicPartition> revoke, std::vector<TopicPartition> assign) {
  std::lock_guard<std::mutex> lock(mu_);
  pending_.push_back(Pending{std::move(revoke), std::move(assign)});
}

void FakeSource::FailPolls(int n) {
  std::lock_guard<std::mutex> lock(mu_);
  fail_polls_ = n;
}

void FakeSource::IgnoreAssignedOffsets(bool ignore) {
  std::lock_guard<std::mutex> lock(mu_);
  ignore_assigned_ = ignore;
}

void FakeSource::SetMaxProcessingTime(std::optional<std::chrono::milliseconds> bound) {
  std::lock_guard<std::mutex> lock(mu_);
  max_processing_time_ = bound;
}

std::optional<std::chrono::milliseconds> FakeSource::MaxProcessingTime() const {
  std::lock_guard<std::mutex> lock(mu_);
  return max_processing_time_;
}

void FakeSource::Pause(bool paused) {
  std::lock_guard<std::mutex> lock(mu_);
  paused_ = paused;
}

std::vector<ReceivedRecord> FakeSource::acked() const {
  std::lock_guard<std::mutex> lock(mu_);
  return acked_;
}

int64_t FakeSource::AckedPosition(const TopicPartition& tp) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = acked_position_.find(tp);
  return it == acked_position_.end() ? 0 : it->second;
}

int64_t FakeSource::Position(const TopicPartition& tp) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = position_.find(tp);
  return it == position_.end() ? -1 : it->second;
}

bool FakeSource::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

Status FakeSource::Subscribe(const std::vector<std::string>&, broker::AssignmentListener* l) {
  std::lock_guard<std::mutex> lock(mu_);
  listener_ = l;
  return Status::Ok();
}

Result<std::vector<ReceivedRecord>> FakeSource::Poll(size_t max_records,
                                                     std::chrono::milliseconds timeout) {
  std::vector<Pending> pending;
  broker::AssignmentListener* listener;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (fail_polls_ > 0) {
      --fail_polls_;
      return Status::Unavailable("fake: broker down");
    }
    pending.swap(pending_);
    listener = listener_;
  }
  for (const auto& p : pending) {
    if (!p.revoke.empty() && listener) listener->OnRevoked(p.revoke);
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const auto& tp : p.revoke) position_.erase(tp);
    }
    std::map<TopicPartition, int64_t> start;
    if (!p.assign.empty() && listener) start = listener->OnAssigned(p.assign);
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& tp : p.assign) {
      auto it = start.find(tp);
      position_[tp] = it == start.end() || ignore_assigned_ ? 0 : it->second;
    }
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    std::vector<ReceivedRecord> out;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (!paused_) {
        for (auto& [tp, pos] : position_) {
          auto& log = log_[tp];
          while (out.size() < max_records && pos < static_cast<int64_t>(log.size()))
            out.push_back(log[pos++]);
        }
      }
    }
    if (!out.empty() || std::chrono::steady_clock::now() >= deadline) return out;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

void FakeSource::Ack(const std::vector<ReceivedRecord>& records) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& r : records) {
    acked_.push_back(r);
    auto& p = acked_position_[TopicPartition{r.topic, r.partition}];
    p = std::max(p, r.offset + 1);
  }
}

Status FakeSource::Seek(const TopicPartition& tp, int64_t offset) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!position_.count(tp)) return Status::FailedPrecondition("fake: partition not assigned");
  position_[tp] = offset;
  return Status::Ok();
}

void FakeSource::Close() {
  std::vector<TopicPartition> all;
  broker::AssignmentListener* listener;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;
    closed_ = true;
    for (const auto& [tp, pos] : position_) all.push_back(tp);
    position_.clear();
    listener = listener_;
  }
  if (listener && !all.empty()) listener->OnRevoked(all);
}

}  // namespace converge::consumer::testing
