#include "converge/common/http_server.h"

#include <Poco/Exception.h>
#include <Poco/Net/HTTPRequestHandler.h>
#include <Poco/Net/HTTPRequestHandlerFactory.h>
#include <Poco/Net/HTTPServer.h>
#include <Poco/Net/HTTPServerParams.h>
#include <Poco/Net/HTTPServerRequest.h>
#include <Poco/Net/HTTPServerResponse.h>
#include <Poco/Net/NetException.h>
#include <Poco/Net/ServerSocket.h>
#include <Poco/Net/SocketAddress.h>
#include <Poco/ThreadPool.h>
#include <Poco/Timespan.h>

#include <exception>
#include <mutex>

#include "converge/common/log.h"
#include "converge/common/metrics.h"

namespace converge {
namespace {

using Poco::Net::HTTPResponse;

constexpr std::string_view kTextPlain = "text/plain; charset=utf-8";

// The one place Poco errors become Status codes.
Status FromPoco(const Poco::Exception& e, std::string_view what) {
  const std::string msg = std::string(what) + ": " + e.displayText();
  if (dynamic_cast<const Poco::Net::HostNotFoundException*>(&e) ||
      dynamic_cast<const Poco::Net::NoAddressFoundException*>(&e) ||
      dynamic_cast<const Poco::Net::InvalidAddressException*>(&e) ||
      dynamic_cast<const Poco::InvalidArgumentException*>(&e)) {
    return Status::InvalidArgument(msg);
  }
  return Status::Unavailable(msg);
}

// Runs a probe; a missing probe passes, a throwing one fails.
Status RunProbe(const Probe& probe) {
  if (!probe) return Status::Ok();
  try {
    return probe();
  } catch (const std::exception& e) {
    return Status::Internal(std::string("probe threw: ") + e.what());
  } catch (...) {
    return Status::Internal("probe threw");
  }
}

struct Shared {
  const metrics::Registry& registry;
  Probe liveness;
  Probe readiness;
};

class Handler final : public Poco::Net::HTTPRequestHandler {
 public:
  explicit Handler(const Shared& shared) : shared_(shared) {}

  void handleRequest(Poco::Net::HTTPServerRequest& request,
                     Poco::Net::HTTPServerResponse& response) override {
    HTTPResponse::HTTPStatus status = HTTPResponse::HTTP_OK;
    std::string content_type(kTextPlain);
    std::string body;
    try {
      std::string path = request.getURI();
      if (const size_t q = path.find_first_of("?#"); q != std::string::npos) path.resize(q);
      const std::string& method = request.getMethod();
      if (method != Poco::Net::HTTPRequest::HTTP_GET &&
          method != Poco::Net::HTTPRequest::HTTP_HEAD) {
        status = HTTPResponse::HTTP_METHOD_NOT_ALLOWED;
        response.set("Allow", "GET, HEAD");
        body = "method not allowed\n";
      } else if (path == "/metrics") {
        content_type = std::string(metrics::kExpositionContentType);
        body = shared_.registry.Expose();
      } else if (path == "/healthz" || path == "/readyz") {
        const Status s = RunProbe(path == "/healthz" ? shared_.liveness : shared_.readiness);
        if (s.ok()) {
          body = "ok\n";
        } else {
          status = HTTPResponse::HTTP_SERVICE_UNAVAILABLE;
          body = Redact(s.ToString()) + "\n";
        }
      } else {
        status = HTTPResponse::HTTP_NOT_FOUND;
        body = "not found\n";
      }
    } catch (const std::exception& e) {
      status = HTTPResponse::HTTP_INTERNAL_SERVER_ERROR;
      content_type = std::string(kTextPlain);
      body = "internal error\n";
      Log(Level::kError, "metrics endpoint request failed", {{"error", e.what()}});
    }
    try {
      response.setStatusAndReason(status);
      response.setContentType(content_type);
      response.set("Cache-Control", "no-store");
      response.setContentLength(static_cast<std::streamsize>(body.size()));
      response.sendBuffer(body.data(), body.size());  // sends headers only for HEAD
    } catch (const Poco::Exception&) {
      // The client went away; nothing to tell it.
    }
  }

 private:
  const Shared& shared_;
};

class Factory final : public Poco::Net::HTTPRequestHandlerFactory {
 public:
  explicit Factory(const Shared& shared) : shared_(shared) {}
  Poco::Net::HTTPRequestHandler* createRequestHandler(
      const Poco::Net::HTTPServerRequest&) override {
    return new Handler(shared_);  // Poco owns and deletes the handler
  }

 private:
  const Shared& shared_;
};

}  // namespace

struct MetricsServer::Impl {
  Impl(const metrics::Registry& registry, MetricsServerOptions opts)
      : options(std::move(opts)), shared{registry, options.liveness, options.readiness} {}

  const MetricsServerOptions options;
  const Shared shared;
  std::mutex mu;  // serializes Start/Stop
  bool started = false;
  bool stopped = false;
  std::atomic<uint16_t> port{0};
  // Declared before `server`: the server uses the pool and must be destroyed first.
  std::unique_ptr<Poco::ThreadPool> pool;
  std::unique_ptr<Poco::Net::HTTPServer> server;
};

MetricsServer::MetricsServer(const metrics::Registry& registry, MetricsServerOptions options)
    : impl_(std::make_unique<Impl>(registry, std::move(options))) {}

MetricsServer::~MetricsServer() { Stop(); }

Status MetricsServer::Start() {
  std::lock_guard lock(impl_->mu);
  if (impl_->started) return Status::FailedPrecondition("metrics server already started");
  const MetricsServerOptions& o = impl_->options;
  const int threads = o.threads > 0 ? o.threads : 1;
  const std::string where = "metrics server on " + o.host + ":" + std::to_string(o.port);
  try {
    Poco::Net::SocketAddress address(o.host, o.port);
    Poco::Net::ServerSocket socket;
    // SO_REUSEADDR (restart while old connections sit in TIME_WAIT) but not SO_REUSEPORT,
    // which would let a second process share the port and answer half the scrapes.
    socket.bind(address, /*reuseAddress=*/true, /*reusePort=*/false);
    socket.listen(64);

    auto* params = new Poco::Net::HTTPServerParams();  // owned by the server (AutoPtr)
    params->setMaxThreads(threads);
    params->setMaxQueued(o.max_queued > 0 ? o.max_queued : 1);
    params->setTimeout(Poco::Timespan(std::chrono::microseconds(o.io_timeout).count()));
    // One request per connection: an idle keep-alive connection would pin a thread and delay
    // Stop() by the keep-alive timeout; a scrape every few seconds does not need it.
    params->setKeepAlive(false);
    params->setServerName("converge");

    impl_->pool = std::make_unique<Poco::ThreadPool>("converge-http", 1, threads);
    // HTTPServer takes ownership of the factory and the params.
    impl_->server = std::make_unique<Poco::Net::HTTPServer>(new Factory(impl_->shared),
                                                            *impl_->pool, socket, params);
    impl_->server->start();
    impl_->port.store(impl_->server->port());
  } catch (const Poco::Exception& e) {
    impl_->server.reset();
    impl_->pool.reset();
    return FromPoco(e, where);
  } catch (const std::exception& e) {
    impl_->server.reset();
    impl_->pool.reset();
    return Status::Internal(where + ": " + e.what());
  }
  impl_->started = true;
  return Status::Ok();
}

void MetricsServer::Stop() {
  std::lock_guard lock(impl_->mu);
  if (!impl_->started || impl_->stopped) return;
  impl_->stopped = true;
  try {
    // Stop accepting; requests in progress complete (abortCurrent=false).
    impl_->server->stopAll(false);
    // Drain: wait until every connection thread has finished its request.
    impl_->pool->joinAll();
  } catch (const Poco::Exception& e) {
    Log(Level::kWarn, "metrics server stop failed", {{"error", e.displayText()}});
  }
  impl_->server.reset();
  impl_->pool.reset();
}

uint16_t MetricsServer::port() const { return impl_->port.load(); }

void Heartbeat::Beat() {
  last_beat_ns_.store(
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.Monotonic().time_since_epoch())
          .count(),
      std::memory_order_relaxed);
}

Status Heartbeat::Check() const {
  const int64_t last = last_beat_ns_.load(std::memory_order_relaxed);
  if (last < 0) return Status::Ok();
  const auto now =
      std::chrono::duration_cast<std::chrono::nanoseconds>(clock_.Monotonic().time_since_epoch());
  const auto silence = now - std::chrono::nanoseconds(last);
  if (silence > max_silence_) {
    return Status::Unavailable(
        "no heartbeat for " +
        std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(silence).count()) +
        "ms (limit " +
        std::to_string(
            std::chrono::duration_cast<std::chrono::milliseconds>(max_silence_).count()) +
        "ms)");
  }
  return Status::Ok();
}

}  // namespace converge
