// DeviceAcl: the mosquitto ACL of pubsub-mqtt/examples/acl.example, for tests that run a private
// broker (converge::testing::MosquittoBroker) with auth on.
//
//   converge::testing::MosquittoBroker broker({.users = {{"relay", "pw"}, {"d1", "d1-pw"}},
//                                              .acl = DeviceAcl("relay", "ingest")});
#pragma once

#include <string>

namespace converge::pubsub::testing {

// A server user that publishes to devices (the relay), one that ingests from them, and devices
// that get their own topics through %u patterns.
std::string DeviceAcl(const std::string& relay_user, const std::string& ingest_user);

}  // namespace converge::pubsub::testing
