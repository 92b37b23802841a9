#include "converge/testing/env.h"

#include <gtest/gtest.h>

#include <cstdlib>

namespace converge::testing {

std::string RequireEnv(const char* name) {
  const char* v = std::getenv(name);
  if (v == nullptr || *v == '\0') {
    ADD_FAILURE() << name
                  << " is not set. Integration tests need the services: run scripts/test.sh, or "
                     "eval \"$(scripts/services.sh start)\" before ctest.";
    return "";
  }
  return v;
}

std::string BinDir() {
  const char* v = std::getenv("CONVERGE_BIN_DIR");
  if (v != nullptr && *v != '\0') return v;
  return CONVERGE_DEFAULT_BIN_DIR;
}

}  // namespace converge::testing
