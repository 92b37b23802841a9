#include "shop.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iomanip>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

#include <pqxx/pqxx>

#include "converge/common/json.h"
#include "converge/pubsub/devices.h"
#include "converge/pubsub/protocol.h"

namespace shop {
namespace {

using converge::Status;
using converge::StatusCode;
using converge::consumer::Context;
namespace flows = converge::flows;

constexpr const char* kFlowType = "shop.order";

// The shop's own tables. Each service owns its tables; they share one database here only to
// keep the demo small (each could have its own: the services talk only through messages).
constexpr const char* kSchemaSql = R"sql(
CREATE SCHEMA IF NOT EXISTS shop;
-- order service
CREATE TABLE IF NOT EXISTS shop.orders (
  order_id     text PRIMARY KEY,
  sku          text NOT NULL,
  qty          integer NOT NULL CHECK (qty > 0),
  amount_cents integer NOT NULL CHECK (amount_cents > 0),
  placed_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- inventory service
CREATE TABLE IF NOT EXISTS shop.stock (
  sku     text PRIMARY KEY,
  initial integer NOT NULL,
  on_hand integer NOT NULL CHECK (on_hand >= 0)
);
CREATE TABLE IF NOT EXISTS shop.reservations (
  order_id text PRIMARY KEY,
  sku      text NOT NULL,
  qty      integer NOT NULL,
  state    text NOT NULL CHECK (state IN ('reserved', 'out', 'released'))
);
-- payment service
CREATE TABLE IF NOT EXISTS shop.payments (
  order_id     text PRIMARY KEY,
  amount_cents integer NOT NULL,
  state        text NOT NULL CHECK (state IN ('charged', 'declined', 'refunded'))
);
CREATE TABLE IF NOT EXISTS shop.ledger (
  id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  order_id     text NOT NULL,
  kind         text NOT NULL CHECK (kind IN ('charge', 'refund')),
  amount_cents integer NOT NULL
);
-- shipping service
CREATE TABLE IF NOT EXISTS shop.shipments (
  order_id     text PRIMARY KEY,
  device_id    text NOT NULL,
  command_id   uuid NOT NULL UNIQUE,
  flow_headers jsonb NOT NULL,  -- echoed in the reply to the orchestrator
  state        text NOT NULL CHECK (state IN ('sent', 'delivered', 'failed'))
);
-- what the services process saw (for the demo report)
CREATE TABLE IF NOT EXISTS shop.service_stats (
  service            text PRIMARY KEY,
  applied            bigint NOT NULL,
  duplicates_skipped bigint NOT NULL,
  dead_letters       bigint NOT NULL,
  updated_at         timestamptz NOT NULL DEFAULT now()
);
-- moments the demo marks (disruption_start/_end around the relay kill), for the report
CREATE TABLE IF NOT EXISTS shop.marks (
  name text PRIMARY KEY,
  at   timestamptz NOT NULL
);
)sql";

// The flow coordinates and the order fields carried by a flow command's payload.
struct Command {
  std::string order_id, sku, card;
  int qty = 0, amount_cents = 0;
};

converge::Result<Command> ParseCommand(Context& ctx, const converge::Message& m) {
  pqxx::result r = ctx.tx().exec_params(
      "SELECT p->>'business_key', coalesce(p->'data'->>'sku', ''), "
      "coalesce((p->'data'->>'qty')::int, 0), coalesce((p->'data'->>'amount_cents')::int, 0), "
      "coalesce(p->'data'->>'card', 'ok') FROM (SELECT $1::jsonb AS p) s",
      m.payload);
  if (r.empty() || r[0][0].is_null())
    return Status::InvalidArgument(m.type + ": payload has no business_key");
  return Command{r[0][0].as<std::string>(), r[0][1].as<std::string>(), r[0][4].as<std::string>(),
                 r[0][2].as<int>(), r[0][3].as<int>()};
}

// The flow coordinates (converge-flow-* headers) of a flow command; its reply must echo them.
std::map<std::string, std::string> FlowHeaders(const converge::Message& command) {
  std::map<std::string, std::string> out;
  for (const auto& [name, value] : command.headers)
    if (name.rfind("converge-flow-", 0) == 0) out[name] = value;
  return out;
}

// A reply to the orchestrator carries the flow headers of the command it answers.
Status Reply(Context& ctx, const converge::Message& command, const std::string& type) {
  return ctx
      .Enqueue({.topic = kRepliesTopic,
                .key = command.subject,
                .type = type,
                .payload = "{}",
                .headers = FlowHeaders(command)})
      .status();
}

double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, static_cast<size_t>(p * (v.size() - 1) + 0.5));
  return v[i];
}

Report::Latency Summarize(const std::vector<double>& ms) {
  Report::Latency l;
  l.orders = static_cast<long long>(ms.size());
  l.p50_ms = Percentile(ms, 0.50);
  l.p99_ms = Percentile(ms, 0.99);
  l.max_ms = ms.empty() ? 0 : *std::max_element(ms.begin(), ms.end());
  return l;
}

std::string FormatLatency(const Report::Latency& l) {
  std::ostringstream o;
  o << "p50 " << static_cast<long>(l.p50_ms) << " ms, p99 " << static_cast<long>(l.p99_ms)
    << " ms, max " << static_cast<long>(l.max_ms) << " ms  (" << l.orders << " completed orders)";
  return o.str();
}

long long Count(pqxx::transaction_base& tx, const std::string& sql) {
  pqxx::result r = tx.exec(sql);
  return r.empty() || r[0][0].is_null() ? 0 : r[0][0].as<long long>();
}

}  // namespace

flows::FlowType OrderFlow(bool with_shipping) {
  flows::FlowType t{
      .name = kFlowType,
      .steps = {{.name = "reserve",
                 .command = {kStockTopic, "shop.stock.reserve"},
                 .reply_type = "shop.stock.reserved",
                 .compensation = flows::MessageRoute{kStockTopic, "shop.stock.release"},
                 .deadline = std::chrono::seconds(5),
                 .max_attempts = 3},
                {.name = "pay",
                 .command = {kPaymentsTopic, "shop.payment.charge"},
                 .reply_type = "shop.payment.charged",
                 .compensation = flows::MessageRoute{kPaymentsTopic, "shop.payment.refund"},
                 .deadline = std::chrono::seconds(5),
                 .max_attempts = 3}},
      .compensation_deadline = std::chrono::seconds(5),
      .compensation_max_attempts = 5};
  if (with_shipping) {
    // A device may be offline for a while: the command itself is re-sent by the device sweep
    // until its TTL; the step's own deadline only re-asks the shipping service.
    t.steps.push_back({.name = "ship",
                       .command = {kShippingTopic, "shop.ship.request"},
                       .reply_type = "shop.shipment.delivered",
                       .deadline = std::chrono::seconds(20),
                       .max_attempts = 4});
  }
  return t;
}

Status Setup(const std::string& db_url, int skus, int stock_per_sku, bool with_shipping) {
  try {
    pqxx::connection conn(db_url);
    pqxx::work tx(conn);
    tx.exec0(kSchemaSql);
    for (int i = 0; i < skus; ++i) {
      tx.exec_params0(
          "INSERT INTO shop.stock (sku, initial, on_hand) VALUES ($1, $2, $2) "
          "ON CONFLICT (sku) DO NOTHING",
          "sku-" + std::to_string(i), stock_per_sku);
    }
    if (Status st = flows::Register(tx, OrderFlow(with_shipping)); !st.ok()) return st;
    tx.commit();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status::Unavailable(std::string("shop setup: ") + e.what());
  }
}

converge::Result<int> PlaceOrders(const std::string& db_url, const PlaceOptions& o) {
  std::mt19937_64 rng(o.seed);
  std::uniform_int_distribution<int> sku(0, o.skus - 1), qty(1, o.max_qty), price(500, 9000),
      pct(0, 99);
  const auto started = std::chrono::steady_clock::now();
  const auto interval = std::chrono::duration<double>(1.0 / o.rate);
  int placed = 0;
  try {
    pqxx::connection conn(db_url);
    auto last_progress = started;
    for (int i = 0; i < o.orders; ++i) {
      std::this_thread::sleep_until(
          started + std::chrono::duration_cast<std::chrono::nanoseconds>(interval * i));
      const std::string order_id = "order-" + std::to_string(o.seed) + "-" + std::to_string(i);
      const std::string s = "sku-" + std::to_string(sku(rng));
      const int q = qty(rng);
      const int amount = q * price(rng);
      const bool declined = pct(rng) < o.decline_percent;
      pqxx::work tx(conn);
      // The order row and the flow's first command commit together, or neither does.
      tx.exec_params0(
          "INSERT INTO shop.orders (order_id, sku, qty, amount_cents) VALUES ($1, $2, $3, $4)",
          order_id, s, q, amount);
      std::ostringstream data;
      data << "{\"sku\":\"" << s << "\",\"qty\":" << q << ",\"amount_cents\":" << amount
           << ",\"card\":\"" << (declined ? "declined" : "ok") << "\"}";
      auto started_flow = flows::Start(tx, kFlowType, order_id, data.str());
      if (!started_flow.ok()) return started_flow.status();
      tx.commit();
      ++placed;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_progress >= std::chrono::seconds(1) || placed == o.orders) {
        last_progress = now;
        std::printf("  placed %d/%d orders\n", placed, o.orders);
        std::fflush(stdout);
      }
    }
  } catch (const std::exception& e) {
    return Status::Unavailable(std::string("placing orders: ") + e.what());
  }
  return placed;
}

void RegisterInventory(converge::consumer::Consumer& consumer) {
  consumer.Handle("shop.stock.reserve", [](const converge::Message& m, Context& ctx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(Command c, ParseCommand(ctx, m));
    auto& tx = ctx.tx();
    // The effect is idempotent per order (a re-emitted command after a lost reply finds the
    // reservation and only replies again); the inbox already drops redeliveries of one id.
    pqxx::result fresh = tx.exec_params(
        "INSERT INTO shop.reservations (order_id, sku, qty, state) VALUES ($1, $2, $3, 'out') "
        "ON CONFLICT (order_id) DO NOTHING RETURNING 1",
        c.order_id, c.sku, c.qty);
    if (!fresh.empty()) {
      pqxx::result took = tx.exec_params(
          "UPDATE shop.stock SET on_hand = on_hand - $2 WHERE sku = $1 AND on_hand >= $2 "
          "RETURNING 1",
          c.sku, c.qty);
      if (!took.empty())
        tx.exec_params0("UPDATE shop.reservations SET state = 'reserved' WHERE order_id = $1",
                        c.order_id);
    }
    const std::string state =
        tx.exec_params1("SELECT state FROM shop.reservations WHERE order_id = $1", c.order_id)[0]
            .as<std::string>();
    if (state == "reserved") return Reply(ctx, m, "shop.stock.reserved");
    if (state == "out") return Reply(ctx, m, "shop.stock.out");
    return Status::Ok();  // released already: the flow is compensating; nothing to say
  });
  consumer.Handle("shop.stock.release", [](const converge::Message& m, Context& ctx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(Command c, ParseCommand(ctx, m));
    auto& tx = ctx.tx();
    // A release that overtakes its reservation leaves a tombstone so the reservation never
    // happens later.
    tx.exec_params0(
        "INSERT INTO shop.reservations (order_id, sku, qty, state) VALUES ($1, $2, 0, "
        "'released') ON CONFLICT (order_id) DO NOTHING",
        c.order_id, c.sku);
    pqxx::result back = tx.exec_params(
        "UPDATE shop.reservations SET state = 'released' WHERE order_id = $1 AND state = "
        "'reserved' RETURNING sku, qty",
        c.order_id);
    if (!back.empty())
      tx.exec_params0("UPDATE shop.stock SET on_hand = on_hand + $2 WHERE sku = $1",
                      back[0][0].as<std::string>(), back[0][1].as<int>());
    return Reply(ctx, m, "shop.stock.released");
  });
}

void RegisterPayments(converge::consumer::Consumer& consumer) {
  consumer.Handle("shop.payment.charge", [](const converge::Message& m, Context& ctx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(Command c, ParseCommand(ctx, m));
    auto& tx = ctx.tx();
    pqxx::result fresh = tx.exec_params(
        "INSERT INTO shop.payments (order_id, amount_cents, state) VALUES ($1, $2, $3) "
        "ON CONFLICT (order_id) DO NOTHING RETURNING state",
        c.order_id, c.amount_cents, c.card == "declined" ? "declined" : "charged");
    if (!fresh.empty() && fresh[0][0].as<std::string>() == "charged")
      tx.exec_params0(
          "INSERT INTO shop.ledger (order_id, kind, amount_cents) VALUES ($1, 'charge', $2)",
          c.order_id, c.amount_cents);
    const std::string state =
        tx.exec_params1("SELECT state FROM shop.payments WHERE order_id = $1", c.order_id)[0]
            .as<std::string>();
    if (state == "charged") return Reply(ctx, m, "shop.payment.charged");
    if (state == "declined") return Reply(ctx, m, "shop.payment.declined");
    return Status::Ok();  // refunded already
  });
  consumer.Handle("shop.payment.refund", [](const converge::Message& m, Context& ctx) -> Status {
    CONVERGE_ASSIGN_OR_RETURN(Command c, ParseCommand(ctx, m));
    auto& tx = ctx.tx();
    tx.exec_params0(
        "INSERT INTO shop.payments (order_id, amount_cents, state) VALUES ($1, 0, 'refunded') "
        "ON CONFLICT (order_id) DO NOTHING",
        c.order_id);
    pqxx::result back = tx.exec_params(
        "UPDATE shop.payments SET state = 'refunded' WHERE order_id = $1 AND state = 'charged' "
        "RETURNING amount_cents",
        c.order_id);
    if (!back.empty())
      tx.exec_params0(
          "INSERT INTO shop.ledger (order_id, kind, amount_cents) VALUES ($1, 'refund', $2)",
          c.order_id, back[0][0].as<int>());
    return Reply(ctx, m, "shop.payment.refunded");
  });
}

void RegisterShipping(converge::consumer::Consumer& consumer, const std::string& device_prefix,
                      int devices) {
  consumer.Handle(
      "shop.ship.request",
      [device_prefix, devices](const converge::Message& m, Context& ctx) -> Status {
        CONVERGE_ASSIGN_OR_RETURN(Command c, ParseCommand(ctx, m));
        auto& tx = ctx.tx();
        pqxx::result have = tx.exec_params(
            "SELECT state FROM shop.shipments WHERE order_id = $1 FOR UPDATE", c.order_id);
        if (have.empty()) {
          const std::string device =
              device_prefix + std::to_string(std::hash<std::string>{}(c.order_id) % devices);
          CONVERGE_ASSIGN_OR_RETURN(
              converge::pubsub::CommandSent sent,
              converge::pubsub::SendCommand(tx, {.device_id = device,
                                                 .name = "deliver",
                                                 .payload = "{\"order_id\":\"" + c.order_id + "\"}",
                                                 .ttl = std::chrono::seconds(60)}));
          tx.exec_params0(
              "INSERT INTO shop.shipments (order_id, device_id, command_id, flow_headers, state) "
              "VALUES ($1, $2, $3::uuid, $4::jsonb, 'sent')",
              c.order_id, device, sent.command_id, converge::JsonObjectOfStrings(FlowHeaders(m)));
          return Status::Ok();  // the reply comes with the device's ack
        }
        // A re-asked step: answer again if the device already finished; a command that expired
        // (the device stayed away past its TTL) fails the step.
        tx.exec_params0(
            "UPDATE shop.shipments s SET state = CASE c.status WHEN 'applied' THEN 'delivered' "
            "ELSE 'failed' END FROM converge.device_commands c WHERE s.order_id = $1 AND "
            "s.state = 'sent' AND c.id = s.command_id AND c.status IN ('applied', "
            "'rejected', 'expired')",
            c.order_id);
        const std::string state =
            tx.exec_params1("SELECT state FROM shop.shipments WHERE order_id = $1", c.order_id)[0]
                .as<std::string>();
        if (state == "delivered") return Reply(ctx, m, "shop.shipment.delivered");
        if (state == "failed") return Reply(ctx, m, "shop.shipment.failed");
        return Status::Ok();
      });
}

void RegisterDeviceIngest(converge::consumer::Consumer& consumer) {
  // Shared by the handlers; freed with the consumer that holds them.
  auto stats = std::make_shared<converge::pubsub::DeviceIngestStats>();
  consumer.Handle(std::string(converge::pubsub::kReportedType),
                  [stats](const converge::Message& m, Context& ctx) {
                    return converge::pubsub::IngestReported(ctx.tx(), m, stats.get());
                  });
  consumer.Handle(std::string(converge::pubsub::kPresenceType),
                  [stats](const converge::Message& m, Context& ctx) {
                    return converge::pubsub::IngestPresence(ctx.tx(), m, stats.get());
                  });
  consumer.Handle(
      std::string(converge::pubsub::kAckType),
      [stats](const converge::Message& m, Context& ctx) -> Status {
        CONVERGE_RETURN_IF_ERROR(converge::pubsub::IngestAck(ctx.tx(), m, stats.get()));
        auto id = m.extensions.find(std::string(converge::pubsub::kExtCommandId));
        if (id == m.extensions.end()) return Status::Ok();
        auto& tx = ctx.tx();
        // Did this ack finish a shipment's command? Then tell the orchestrator, in this
        // transaction.
        pqxx::result r = tx.exec_params(
            "SELECT s.order_id, s.flow_headers::text, c.status FROM shop.shipments s "
            "JOIN converge.device_commands c ON c.id = s.command_id "
            "WHERE s.command_id::text = $1 AND s.state = 'sent' AND c.status IN ('applied', "
            "'rejected', 'expired') FOR UPDATE OF s",
            id->second);
        if (r.empty()) return Status::Ok();
        const std::string order_id = r[0][0].as<std::string>();
        const bool applied = r[0][2].as<std::string>() == "applied";
        tx.exec_params0("UPDATE shop.shipments SET state = $2 WHERE order_id = $1", order_id,
                        applied ? "delivered" : "failed");
        converge::outbox::OutboxMessage reply{
            .topic = kRepliesTopic,
            .key = order_id,
            .type = applied ? "shop.shipment.delivered" : "shop.shipment.failed",
            .payload = "{}"};
        for (const auto& row : tx.exec_params("SELECT key, value FROM jsonb_each_text($1::jsonb)",
                                              r[0][1].as<std::string>()))
          reply.headers[row[0].as<std::string>()] = row[1].as<std::string>();
        return ctx.Enqueue(reply).status();
      });
}

void RegisterOrchestrator(converge::consumer::Consumer& consumer) {
  auto advance = [](const std::string& what) {
    return [what](const converge::Message& m, Context& ctx) -> Status {
      CONVERGE_ASSIGN_OR_RETURN(flows::FlowRef ref, flows::RefFromHeaders(m.headers));
      converge::Result<flows::ReplyOutcome> out = Status::Internal("unreachable");
      if (what == "complete") {
        out = flows::CompleteStep(ctx.tx(), ref.flow_id, ref.step);
      } else if (what == "compensated") {
        out = flows::CompensationDone(ctx.tx(), ref.flow_id, ref.step);
      } else {
        out = flows::FailStep(ctx.tx(), ref.flow_id, ref.step, what);
      }
      return out.status();
    };
  };
  consumer.Handle("shop.stock.reserved", advance("complete"));
  consumer.Handle("shop.payment.charged", advance("complete"));
  consumer.Handle("shop.stock.out", advance("out of stock"));
  consumer.Handle("shop.payment.declined", advance("payment declined"));
  consumer.Handle("shop.stock.released", advance("compensated"));
  consumer.Handle("shop.payment.refunded", advance("compensated"));
  consumer.Handle("shop.shipment.delivered", advance("complete"));
  consumer.Handle("shop.shipment.failed", advance("delivery failed"));
}

bool Report::consistent() const {
  return running == 0 && needs_attention == 0 && placed == completed + compensated &&
         stock_initial - stock_reserved_for_completed == stock_now && double_charges == 0 &&
         double_reservations == 0 && net_charged_cents == completed_amount_cents;
}

converge::Result<Report> ReadReport(const std::string& db_url) {
  Report r;
  try {
    pqxx::connection conn(db_url);
    pqxx::read_transaction tx(conn);
    r.placed = Count(tx, "SELECT count(*) FROM shop.orders");
    const std::string flows_of = "FROM converge.flows WHERE flow_type = 'shop.order' AND ";
    r.completed = Count(tx, "SELECT count(*) " + flows_of + "state = 'completed'");
    r.compensated = Count(tx, "SELECT count(*) " + flows_of + "state = 'compensated'");
    r.running = Count(tx, "SELECT count(*) " + flows_of + "state IN ('running', 'compensating')");
    r.needs_attention = Count(tx, "SELECT count(*) " + flows_of + "state = 'needs_attention'");
    r.stock_outs = Count(tx, "SELECT count(*) FROM shop.reservations WHERE state = 'out'");
    r.declined = Count(tx, "SELECT count(*) FROM shop.payments WHERE state = 'declined'");
    r.stock_initial = Count(tx, "SELECT sum(initial) FROM shop.stock");
    r.stock_now = Count(tx, "SELECT sum(on_hand) FROM shop.stock");
    // Stock held by reservations must be exactly the quantity of the completed orders: a
    // compensated order that kept its stock, or a reservation applied twice, breaks this.
    r.stock_reserved_for_completed = Count(
        tx,
        "SELECT sum(o.qty) FROM shop.orders o JOIN converge.flows f "
        "ON f.flow_type = 'shop.order' AND f.business_key = o.order_id AND f.state = 'completed'");
    r.double_reservations = Count(
        tx,
        "SELECT (SELECT coalesce(sum(qty), 0) FROM shop.reservations WHERE state = 'reserved') - "
        "coalesce((SELECT sum(o.qty) FROM shop.orders o JOIN converge.flows f ON f.flow_type = "
        "'shop.order' AND f.business_key = o.order_id AND f.state = 'completed'), 0)");
    r.double_charges =
        Count(tx,
              "SELECT count(*) FROM (SELECT order_id FROM shop.ledger WHERE kind = 'charge' "
              "GROUP BY order_id HAVING count(*) > 1) d");
    r.net_charged_cents =
        Count(tx,
              "SELECT sum(CASE kind WHEN 'charge' THEN amount_cents ELSE -amount_cents END) "
              "FROM shop.ledger");
    r.completed_amount_cents = Count(
        tx,
        "SELECT sum(o.amount_cents) FROM shop.orders o JOIN converge.flows f "
        "ON f.flow_type = 'shop.order' AND f.business_key = o.order_id AND f.state = 'completed'");
    r.duplicates_skipped = Count(tx, "SELECT sum(duplicates_skipped) FROM shop.service_stats");
    r.shipments = Count(tx, "SELECT count(*) FROM shop.shipments");
    r.delivered = Count(tx, "SELECT count(*) FROM shop.shipments WHERE state = 'delivered'");
    r.device_commands_applied =
        Count(tx, "SELECT count(*) FROM converge.device_commands WHERE status = 'applied'");
    r.refunded = Count(tx, "SELECT count(*) FROM shop.payments WHERE state = 'refunded'");
    // Latency of completed orders, split by the marked disruption window when there is one.
    pqxx::result w = tx.exec(
        "SELECT extract(epoch FROM e.at - s.at) FROM shop.marks s, shop.marks e "
        "WHERE s.name = 'disruption_start' AND e.name = 'disruption_end'");
    r.has_window = !w.empty() && !w[0][0].is_null();
    if (r.has_window) r.window_seconds = w[0][0].as<double>();
    std::vector<double> all, steady, disrupted;
    for (const auto& row : tx.exec(
             "SELECT extract(epoch FROM f.finished_at - f.created_at) * 1000, "
             "coalesce(o.placed_at >= (SELECT at FROM shop.marks WHERE name = 'disruption_start') "
             "AND o.placed_at < (SELECT at FROM shop.marks WHERE name = 'disruption_end'), false) "
             "FROM converge.flows f JOIN shop.orders o ON o.order_id = f.business_key "
             "WHERE f.flow_type = 'shop.order' AND f.state = 'completed'")) {
      const double ms = row[0].as<double>();
      all.push_back(ms);
      (row[1].as<bool>() ? disrupted : steady).push_back(ms);
    }
    r.latency = Summarize(all);
    r.steady = Summarize(steady);
    r.disrupted = Summarize(disrupted);
  } catch (const std::exception& e) {
    return Status::Unavailable(std::string("report: ") + e.what());
  }
  return r;
}

std::string FormatReport(const Report& r) {
  std::ostringstream o;
  o << "orders placed            " << r.placed << "\n"
    << "  completed              " << r.completed << "\n"
    << "  compensated            " << r.compensated << "  (stock-outs " << r.stock_outs
    << ", payments declined " << r.declined << ", refunds " << r.refunded << ")\n"
    << "  still running          " << r.running << "\n"
    << "  needs attention        " << r.needs_attention << "\n"
    << "stock                    initial " << r.stock_initial << " - held by completed orders "
    << r.stock_reserved_for_completed << " = " << r.stock_initial - r.stock_reserved_for_completed
    << ", on hand " << r.stock_now
    << (r.stock_initial - r.stock_reserved_for_completed == r.stock_now ? "  (consistent)"
                                                                        : "  (INCONSISTENT)")
    << "\n"
    << "reservations not matched " << r.double_reservations << "\n"
    << "orders charged twice     " << r.double_charges << "\n"
    << "money                    charged - refunded " << r.net_charged_cents
    << " cents, completed orders " << r.completed_amount_cents << " cents"
    << (r.net_charged_cents == r.completed_amount_cents ? "  (consistent)" : "  (INCONSISTENT)")
    << "\n"
    << "deliveries (MQTT)        " << r.shipments << " commands sent to devices, "
    << r.device_commands_applied << " acked applied, " << r.delivered << " delivered\n"
    << "duplicates absorbed      " << r.duplicates_skipped
    << "  (redelivered messages the consumers' inboxes skipped)\n"
    << "order latency            placed -> completed, end to end (Kafka, MQTT, device ack)\n";
  if (r.has_window) {
    o << "  steady state           " << FormatLatency(r.steady) << "\n"
      << "                         (orders placed outside the relay kill window)\n"
      << "  relay kill window      " << FormatLatency(r.disrupted) << "\n"
      << "                         (orders placed in the " << std::fixed << std::setprecision(1)
      << r.window_seconds << " s from the kill -9 until the\n"
      << "                         restarted relay took over the slots and drained the backlog)\n";
  } else {
    o << "  all orders             " << FormatLatency(r.latency) << "\n";
  }
  return o.str();
}

Status MarkNow(const std::string& db_url, const std::string& name) {
  try {
    pqxx::connection conn(db_url);
    pqxx::work tx(conn);
    tx.exec_params0(
        "INSERT INTO shop.marks (name, at) VALUES ($1, clock_timestamp()) "
        "ON CONFLICT (name) DO UPDATE SET at = EXCLUDED.at",
        name);
    tx.commit();
  } catch (const std::exception& e) {
    return Status::Unavailable(std::string("mark: ") + e.what());
  }
  return Status::Ok();
}

}  // namespace shop
