// The shop example: an order flow across three services, written only against Converge's public
// API. See examples/README.md for the story and scripts/demo.sh for how it runs.
//
//   order service      places orders: the order row and the flow start (its first command
//                      goes to the outbox) in ONE transaction
//   inventory service  consumes stock.reserve / stock.release exactly once, replies
//   payment service    consumes payment.charge / payment.refund exactly once, replies
//   orchestrator       consumes the replies and advances the flow (complete, fail, compensate)
//   converge-relay     publishes every outbox row to Kafka
//   converge-reconciler re-emits steps whose reply is late, compensates, parks
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "converge/common/status.h"
#include "converge/consumer/consumer.h"
#include "converge/reconciler/flow.h"

namespace shop {

// Topics.
inline constexpr const char* kStockTopic = "shop.stock";
inline constexpr const char* kPaymentsTopic = "shop.payments";
inline constexpr const char* kRepliesTopic = "shop.order-replies";
inline constexpr const char* kShippingTopic = "shop.shipping";

// The order flow: reserve stock, charge the payment, ship. A stock-out fails step 0 (nothing to
// undo); a declined payment fails step 1 and compensates step 0 (the stock is released); with
// `with_shipping`, step 2 sends a "deliver" command to a delivery device over MQTT and
// completes on the device's `applied` ack; a rejected or expired command fails the step and
// compensates the payment (refund) and the stock (release).
converge::flows::FlowType OrderFlow(bool with_shipping);

// Creates the shop schema (idempotent), fills the stock and registers the flow type.
converge::Status Setup(const std::string& db_url, int skus, int stock_per_sku,
                       bool with_shipping = false);

struct PlaceOptions {
  int orders = 100;
  double rate = 50;  // orders per second
  int skus = 10;
  int max_qty = 3;
  int decline_percent = 10;  // orders whose payment will be declined
  uint64_t seed = 1;
};
// Places orders at a fixed rate; prints progress. Returns the number placed.
converge::Result<int> PlaceOrders(const std::string& db_url, const PlaceOptions& options);

// Registers the three services' handlers on their consumers.
void RegisterInventory(converge::consumer::Consumer& consumer);
void RegisterPayments(converge::consumer::Consumer& consumer);
void RegisterOrchestrator(converge::consumer::Consumer& consumer);
// Shipping: "shop.ship.request" sends a deliver command to device `<prefix><n>` (one of
// `devices`), chosen by order id. Runs on a Kafka consumer.
void RegisterShipping(converge::consumer::Consumer& consumer, const std::string& device_prefix,
                      int devices);
// Device messages (acks, reported state, presence) from MQTT: the pubsub ingest handlers, and
// for an ack that finished a deliver command, the shipping reply to the orchestrator in the
// same transaction. Runs on an MQTT consumer (converge::broker::MakeMqttSource).
void RegisterDeviceIngest(converge::consumer::Consumer& consumer);

// The checkable end state, from the database.
struct Report {
  long long placed = 0, completed = 0, compensated = 0, running = 0, needs_attention = 0;
  long long stock_outs = 0, declined = 0;
  long long stock_initial = 0, stock_now = 0, stock_reserved_for_completed = 0;
  long long net_charged_cents = 0, completed_amount_cents = 0;
  long long refunded = 0, double_charges = 0, double_reservations = 0;
  long long duplicates_skipped = 0;  // by the services' consumers (shop.service_stats)
  long long shipments = 0, delivered = 0, device_commands_applied = 0;
  // Latency (placed -> completed) of completed orders. With the marks "disruption_start" and
  // "disruption_end" (MarkNow), orders placed inside that window are reported apart from the
  // rest (steady state), so a deliberate relay kill does not hide the normal latency.
  struct Latency {
    long long orders = 0;
    double p50_ms = 0, p99_ms = 0, max_ms = 0;
  };
  Latency latency;  // every completed order
  bool has_window = false;
  double window_seconds = 0;  // disruption_end - disruption_start
  Latency steady;             // placed outside the window
  Latency disrupted;          // placed inside the window
  bool consistent() const;
};
converge::Result<Report> ReadReport(const std::string& db_url);
// Records the current database time under `name` in shop.marks (replacing an earlier mark).
converge::Status MarkNow(const std::string& db_url, const std::string& name);
std::string FormatReport(const Report& r);

}  // namespace shop
