// FakePublisher: an in-memory Publisher with failure switches, for relay tests.
//
//   auto pub = std::make_unique<FakePublisher>();
//   FakePublisher* fake = pub.get();          // keep a handle; the relay owns the publisher
//   fake->FailWhen([](const Message& m) { return m.subject == "k1" ? Status::Unavailable("x")
//                                                                  : Status::Ok(); });
//   fake->RefuseAsTooLarge("k2", 1);          // a poison row (replaces the FailWhen rule)
//   fake->SetDown(true);                      // every publish fails with kUnavailable
//   fake->BeforeBatch([](const std::vector<Message>& batch) { ... });  // e.g. hold a batch
//
// Thread safety: all methods are safe to call from any thread.
#pragma once

#include <functional>
#include <mutex>
#include <string>
#include <vector>

#include "converge/broker/publisher.h"

namespace converge::testing {

class FakePublisher final : public broker::Publisher {
 public:
  using Rule = std::function<Status(const Message&)>;

  std::vector<broker::DeliveryResult> PublishBatch(std::span<const Message* const> messages,
                                                   std::chrono::milliseconds) override {
    std::function<void(const std::vector<Message>&)> hook;
    {
      std::lock_guard<std::mutex> l(mu_);
      hook = before_batch_;
    }
    if (hook) {
      // Called without the lock, so that it may block (a batch held at the "broker") while the
      // test inspects the publisher.
      std::vector<Message> batch;
      for (const Message* m : messages) batch.push_back(*m);
      hook(batch);
    }
    std::lock_guard<std::mutex> l(mu_);
    std::vector<broker::DeliveryResult> out;
    ++batches_;
    for (const Message* m : messages) {
      Status st = down_ ? Status::Unavailable("fake broker down") : Status::Ok();
      if (st.ok() && rule_) st = rule_(*m);
      if (st.ok() || st.code() == StatusCode::kDeadlineExceeded) {
        // A timed-out delivery may still have been written: record it like the broker would.
        published_.push_back(*m);
      }
      out.push_back({st, 0, static_cast<int64_t>(published_.size())});
    }
    return out;
  }
  Status CheckConnected(std::chrono::milliseconds) override {
    std::lock_guard<std::mutex> l(mu_);
    return down_ ? Status::Unavailable("fake broker down") : Status::Ok();
  }
  std::string Name() const override { return "fake"; }
  void Close(std::chrono::milliseconds) override {}

  void SetDown(bool down) {
    std::lock_guard<std::mutex> l(mu_);
    down_ = down;
  }
  // Called with each batch before it is answered, on the publishing thread.
  void BeforeBatch(std::function<void(const std::vector<Message>&)> hook) {
    std::lock_guard<std::mutex> l(mu_);
    before_batch_ = std::move(hook);
  }
  void FailWhen(Rule rule) {
    std::lock_guard<std::mutex> l(mu_);
    rule_ = std::move(rule);
  }
  // A poison row: the message with this key and sequence is refused for good, as a broker
  // refuses one that is too large (the relay dead-letters it and parks its key).
  void RefuseAsTooLarge(std::string subject, int64_t sequence) {
    FailWhen([subject = std::move(subject), sequence](const Message& m) {
      if (m.subject == subject && m.sequence == sequence)
        return Status::FailedPrecondition("Broker: Message size too large");
      return Status::Ok();
    });
  }
  std::vector<Message> published() const {
    std::lock_guard<std::mutex> l(mu_);
    return published_;
  }
  int batches() const {
    std::lock_guard<std::mutex> l(mu_);
    return batches_;
  }

 private:
  mutable std::mutex mu_;
  bool down_ = false;
  Rule rule_;
  std::function<void(const std::vector<Message>&)> before_batch_;
  std::vector<Message> published_;
  int batches_ = 0;
};

}  // namespace converge::testing
