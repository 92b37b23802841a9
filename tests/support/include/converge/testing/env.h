// Environment for integration tests. scripts/services.sh exports CONVERGE_PG_URL,
// CONVERGE_KAFKA_BROKERS and CONVERGE_MQTT_URL; a test that needs one and does not find it
// fails with a message saying how to start the services. Tests never skip.
#pragma once

#include <string>

namespace converge::testing {

// The value of `name`, or a test failure (ADD_FAILURE) naming the variable and an empty string.
std::string RequireEnv(const char* name);

// The directory holding the built executables (CONVERGE_BIN_DIR, set by CTest), for tests that
// start converge-relay and friends as real processes.
std::string BinDir();

}  // namespace converge::testing
